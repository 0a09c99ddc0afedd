"""Parses a Prometheus text exposition with prometheus_client's own parser (the one
Python exporters and tests use).

Usage: prometheus_samples.py FILE   Prints every sample as a JSON list of
{"name", "labels", "value"}, and each family's type as {"types": {family: type}}.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

with open(sys.argv[1], encoding="utf-8") as f:
    text = f.read()
samples, types = [], {}
for family in text_string_to_metric_families(text):
    types[family.name] = family.type
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps({"samples": samples, "types": types}))
