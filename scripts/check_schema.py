#!/usr/bin/env python3
"""Validates a JSON document (file or '-' for stdin) against a JSON Schema file.

usage: check_schema.py SCHEMA.json DOCUMENT.json
Exit 0 when valid; 1 with the first violation on stderr otherwise.
"""
import json
import sys

import jsonschema


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    doc = json.load(sys.stdin if sys.argv[2] == "-" else open(sys.argv[2]))
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as e:
        print(f"{sys.argv[2]}: {'/'.join(map(str, e.absolute_path))}: {e.message}", file=sys.stderr)
        return 1
    print(f"{sys.argv[2]}: valid against {sys.argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
