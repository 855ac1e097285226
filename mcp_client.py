"""The full multi-patient client session. `python mcp_client.py --help` lists the flags."""

from clinsum.session import main

if __name__ == "__main__":
    raise SystemExit(main())
