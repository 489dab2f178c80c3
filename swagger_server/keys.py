"""``python -m swagger_server.keys new <name> <role>`` and ``... token --sub N --role R``:
see swagger_server/auth/cli.py."""

import sys

from swagger_server.auth.cli import main

if __name__ == "__main__":
    sys.exit(main())
