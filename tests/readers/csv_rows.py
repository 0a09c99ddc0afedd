"""Reads a CSV file with Python's csv module (RFC 4180 dialect, as Excel and pandas do).

Usage: csv_rows.py FILE   Prints the rows (header first) as a JSON list of lists.
"""
import csv
import json
import sys

with open(sys.argv[1], newline="", encoding="utf-8") as f:
    print(json.dumps(list(csv.reader(f))))
