#!/usr/bin/env python3
"""AdaFace Stream entry point: `python run.py --help`."""

import sys

from stream.cli import leave, main

if __name__ == "__main__":
    sys.exit(leave(main()))
