"""Guided streaming demo. `python interactive_streaming_demo.py --help` lists the flags."""

from clinsum.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
