"""Start the clinical patient-summary server. `python mcp_server.py --help` lists the flags."""

from clinsum.server import main

if __name__ == "__main__":
    raise SystemExit(main())
