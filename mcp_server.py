"""Start the clinical patient-summary server. `python mcp_server.py --help` lists the flags."""

from clinsum.server import exit_now, main

if __name__ == "__main__":
    exit_now(main())
