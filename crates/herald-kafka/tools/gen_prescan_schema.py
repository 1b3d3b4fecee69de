#!/usr/bin/env python3
"""Generates src/prescan/schema.rs from the kafka-protocol crate's generated decoders.

The prescan must walk a request exactly as `kafka-protocol`'s `Decodable` impls do, so the
table is derived from those impls rather than from Kafka's JSON message specs (the crate is
what runs, and it differs from the specs in places, e.g. which fields accept null).

Usage (from crates/herald-kafka):
    python3 tools/gen_prescan_schema.py ~/.cargo/registry/src/*/kafka-protocol-<version> \
        > src/prescan/schema.rs && cargo fmt -p herald-kafka
"""

import re
import sys
from pathlib import Path

# (ApiKey variant, file stem, top-level request struct).
APIS = [
    ("Produce", "produce_request", "ProduceRequest"),
    ("Fetch", "fetch_request", "FetchRequest"),
    ("ListOffsets", "list_offsets_request", "ListOffsetsRequest"),
    ("Metadata", "metadata_request", "MetadataRequest"),
    ("OffsetCommit", "offset_commit_request", "OffsetCommitRequest"),
    ("OffsetFetch", "offset_fetch_request", "OffsetFetchRequest"),
    ("FindCoordinator", "find_coordinator_request", "FindCoordinatorRequest"),
    ("JoinGroup", "join_group_request", "JoinGroupRequest"),
    ("Heartbeat", "heartbeat_request", "HeartbeatRequest"),
    ("LeaveGroup", "leave_group_request", "LeaveGroupRequest"),
    ("SyncGroup", "sync_group_request", "SyncGroupRequest"),
    ("DescribeGroups", "describe_groups_request", "DescribeGroupsRequest"),
    ("ListGroups", "list_groups_request", "ListGroupsRequest"),
    ("SaslHandshake", "sasl_handshake_request", "SaslHandshakeRequest"),
    ("ApiVersions", "api_versions_request", "ApiVersionsRequest"),
    ("CreateTopics", "create_topics_request", "CreateTopicsRequest"),
    ("DeleteTopics", "delete_topics_request", "DeleteTopicsRequest"),
    ("DeleteRecords", "delete_records_request", "DeleteRecordsRequest"),
    ("InitProducerId", "init_producer_id_request", "InitProducerIdRequest"),
    ("DescribeAcls", "describe_acls_request", "DescribeAclsRequest"),
    ("CreateAcls", "create_acls_request", "CreateAclsRequest"),
    ("DeleteAcls", "delete_acls_request", "DeleteAclsRequest"),
    ("DescribeConfigs", "describe_configs_request", "DescribeConfigsRequest"),
    ("AlterConfigs", "alter_configs_request", "AlterConfigsRequest"),
    ("SaslAuthenticate", "sasl_authenticate_request", "SaslAuthenticateRequest"),
    ("CreatePartitions", "create_partitions_request", "CreatePartitionsRequest"),
    ("DeleteGroups", "delete_groups_request", "DeleteGroupsRequest"),
    ("IncrementalAlterConfigs", "incremental_alter_configs_request",
     "IncrementalAlterConfigsRequest"),
    ("OffsetDelete", "offset_delete_request", "OffsetDeleteRequest"),
    ("DescribeUserScramCredentials", "describe_user_scram_credentials_request",
     "DescribeUserScramCredentialsRequest"),
    ("AlterUserScramCredentials", "alter_user_scram_credentials_request",
     "AlterUserScramCredentialsRequest"),
    ("DescribeCluster", "describe_cluster_request", "DescribeClusterRequest"),
]

PRIMS = {
    "Boolean": "Bool", "Int8": "I8", "Int16": "I16", "UInt16": "U16", "Int32": "I32",
    "UInt32": "U32", "Int64": "I64", "Float64": "F64", "Uuid": "Uuid",
    "VarInt": "VarInt", "VarLong": "VarLong",
}
COMPACT = {"CompactString": "String", "CompactBytes": "Bytes", "CompactArray": "Array"}


def die(msg):
    sys.stderr.write(f"gen_prescan_schema: {msg}\n")
    sys.exit(1)


def tokenize(src):
    toks = []
    i = 0
    pat = re.compile(r'\s+|//[^\n]*|"(?:\\.|[^"\\])*"|[A-Za-z_][A-Za-z0-9_]*|\d+|::|&&|\|\||>=|<=|==|!=|=>|.', re.S)
    while i < len(src):
        m = pat.match(src, i)
        t = m.group(0)
        i = m.end()
        if t.isspace() or t.startswith("//"):
            continue
        toks.append(t)
    return toks


def block_end(toks, i):
    """toks[i] is an opening brace or paren; returns the index of its partner."""
    opening = toks[i]
    closing = {"{": "}", "(": ")", "[": "]"}[opening]
    depth = 0
    for j in range(i, len(toks)):
        if toks[j] == opening:
            depth += 1
        elif toks[j] == closing:
            depth -= 1
            if depth == 0:
                return j
    die("unbalanced braces")


def cond_fn(toks):
    text = " ".join(toks).replace("&&", "and").replace("||", "or")
    if not re.fullmatch(r"[ version<>=!\d()andor-]+", text):
        die(f"unexpected condition {text!r}")
    return lambda v, text=text: eval(text, {}, {"version": v})


def parse_expr(toks):
    """An expression as a function of the version: returns the decode-type tokens, 'bail' or
    None (a default value, nothing read)."""
    if toks and toks[0] == "if":
        j = toks.index("{")
        cond = cond_fn(toks[1:j])
        k = block_end(toks, j)
        then = parse_expr(toks[j + 1:k])
        if k + 1 >= len(toks) or toks[k + 1] != "else":
            die(f"if without else: {' '.join(toks)}")
        if toks[k + 2] == "if":
            other = parse_expr(toks[k + 2:])
        else:
            m = block_end(toks, k + 2)
            if m != len(toks) - 1:
                die(f"trailing tokens after else: {' '.join(toks)}")
            other = parse_expr(toks[k + 3:m])
        return lambda v: then(v) if cond(v) else other(v)
    if toks and toks[0] == "bail":
        return lambda v: "bail"
    # `NAME = EXPR;` inside a tag arm.
    if len(toks) > 2 and toks[1] == "=" and toks[-1] == ";":
        return parse_expr(toks[2:-1])
    if toks and toks[-1] == ";":
        toks = toks[:-1]
    if "decode" in toks:
        if toks[0] != "types" or toks[1] != "::" or toks[-6:] != [".", "decode", "(", "buf", ")", "?"]:
            die(f"unexpected decode expression {' '.join(toks)}")
        ty = tuple(toks[2:-6])
        return lambda v: ty
    return lambda v: None


def split_generic(t):
    """`Option<Vec<X>>` -> ('Option', 'Vec<X>')."""
    m = re.fullmatch(r"([A-Za-z_:]+)<(.*)>", t)
    return (m.group(1), m.group(2)) if m else (None, t)


def strip_path(t):
    return t.replace("super::", "")


def resolve(dtoks, rust_ty, version, flexible, where):
    """Maps decode-type tokens plus the field's Rust type to a schema type string, checking
    that compact encodings are used exactly at flexible versions."""
    name = dtoks[0]
    rest = list(dtoks[1:])
    outer, inner = split_generic(rust_ty)
    nullable = outer == "Option"
    if nullable:
        rust_ty = inner
    if name in COMPACT:
        compact, base = True, COMPACT[name]
    elif name in ("String", "Bytes", "Array"):
        compact, base = False, name
    else:
        compact, base = None, name
    if compact is not None and compact != flexible:
        die(f"{where} v{version}: {name} at a {'flexible' if flexible else 'non-flexible'} version")
    if base in ("String", "Bytes"):
        if rest:
            die(f"{where}: unexpected {dtoks}")
        return ("NStr" if nullable else "Str") if base == "String" else (
            "NBytes" if nullable else "Bytes")
    if base == "Array":
        if rest[0] != "(" or rest[-1] != ")":
            die(f"{where}: unexpected {dtoks}")
        elem = rest[1:-1]
        vec, elem_rust = split_generic(rust_ty)
        if vec != "Vec":
            die(f"{where}: array field of Rust type {rust_ty}")
        if elem[:2] == ["types", "::"]:
            elem = elem[2:]
        e = resolve(elem, elem_rust, version, flexible, where + "[]")
        return f"{'NArray' if nullable else 'Array'}(&{e})"
    if base == "Struct":
        if rest != ["{", "version", "}"] or nullable:
            die(f"{where}: unexpected struct {dtoks} / {rust_ty}")
        return f"Struct(&{const_name(strip_path(rust_ty))})"
    if base in PRIMS:
        if rest or nullable:
            die(f"{where}: unexpected {dtoks} / {rust_ty}")
        return PRIMS[base]
    die(f"{where}: unsupported decode type {dtoks}")


CONSTS = {}
# Struct names defined by more than one message (e.g. AlterableConfig) get the API as prefix.
SHARED = set()
PREFIX = [""]


def screaming(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def const_name(struct):
    prefix = PREFIX[0] if struct in SHARED else ""
    return CONSTS.setdefault(struct, prefix + screaming(struct))


def runs(per_version):
    """[(v, value)] -> [(vmin, vmax, value)] merging consecutive equal values."""
    out = []
    for v, val in per_version:
        if out and out[-1][2] == val and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v, val)
        else:
            out.append((v, v, val))
    return out


def parse_file(path):
    src = path.read_text()
    fields_of = {}
    for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", src, re.S):
        fields = {}
        for fm in re.finditer(r"^\s*pub (\w+): (.+),$", m.group(2), re.M):
            fields[fm.group(1)] = strip_path(fm.group(2))
        fields_of[m.group(1)] = fields
    structs = {}
    for m in re.finditer(r"impl Decodable for (\w+) \{", src):
        name = m.group(1)
        toks = tokenize(src[m.end():])
        # fn decode<B: ByteBuf>(buf: &mut B, version: i16) -> Result<Self> { BODY }
        j = toks.index("{")
        body = toks[j + 1:block_end(toks, j)]
        structs[name] = parse_decode(name, body, fields_of.get(name, {}))
    return structs


def parse_decode(name, body, rust_types):
    i = 0
    # if version < MIN || version > MAX { bail!(...); }
    # or, for a single version: if version != V { bail!(...); }
    if body[:3] == ["if", "version", "!="]:
        vmin = vmax = int(body[3])
        i = block_end(body, 4) + 1
    elif body[:3] == ["if", "version", "<"] and body[5:7] == ["version", ">"]:
        vmin, vmax = int(body[3]), int(body[7])
        i = block_end(body, 8) + 1
    else:
        die(f"{name}: unexpected version check {body[:10]}")
    fields = []
    tagged = None
    while i < len(body):
        if body[i] == "let":
            j = i + 1
            if body[j] == "mut":
                j += 1
            fname = body[j]
            if body[j + 1] != "=":
                die(f"{name}: unexpected let {body[i:j + 3]}")
            # statement ends at the first `;` at brace depth 0
            k = j + 2
            depth = 0
            while True:
                t = body[k]
                if t in "{([":
                    depth += 1
                elif t in "})]":
                    depth -= 1
                elif t == ";" and depth == 0:
                    break
                k += 1
            expr = body[j + 2:k]
            if fname == "unknown_tagged_fields":
                pass
            elif fname == "num_tagged_fields":
                # flexible at every version: the section is not wrapped in `if version >= N`
                f = body.index("{", k)
                if body[k + 1] != "for":
                    die(f"{name}: unexpected tagged-field loop")
                g = block_end(body, f)
                tagged = (vmin, parse_tags(name, body[f + 1:g]))
                k = g
            elif "decode" in expr:
                fields.append((fname, parse_expr(expr)))
            i = k + 1
        elif body[i] == "if":
            # the tagged-field section: if version >= N { ... }
            j = body.index("{", i)
            cond = body[i + 1:j]
            if len(cond) != 3 or cond[:2] != ["version", ">="]:
                die(f"{name}: unexpected tagged-field condition {cond}")
            k = block_end(body, j)
            tagged = (int(cond[2]), parse_tags(name, body[j + 1:k]))
            i = k + 1
        elif body[i] == "Ok":
            break
        else:
            die(f"{name}: unexpected statement at {body[i:i + 8]}")
    # A message that is never flexible has no tagged-field section at all.
    flex_min, arms = tagged if tagged is not None else (None, [])
    flex_at = lambda v: flex_min is not None and v >= flex_min
    out_fields = []
    for fname, fn in fields:
        if fname not in rust_types:
            die(f"{name}.{fname}: no Rust type found")
        per = []
        for v in range(vmin, vmax + 1):
            d = fn(v)
            if d == "bail":
                die(f"{name}.{fname}: bails at v{v}")
            if d is not None:
                d = resolve(list(d), rust_types[fname], v, flex_at(v), f"{name}.{fname}")
            per.append((v, d))
        for a, b, d in runs(per):
            if d is not None:
                out_fields.append((fname, a, b, d))
    out_tags = []
    for tag, fname, fn in arms:
        per = []
        for v in range(max(vmin, flex_min or 0), vmax + 1):
            d = fn(v)
            if d not in (None, "bail"):
                d = resolve(list(d), rust_types[fname], v, True, f"{name}.{fname}")
            elif d is None:
                die(f"{name} tag {tag}: reads nothing at v{v}")
            per.append((v, d))
        valid = [(a, b, d) for a, b, d in runs(per) if d != "bail"]
        if not valid:
            # The walker only knows a tag through its valid versions.
            die(f"{name} tag {tag}: never valid")
        for a, b, d in valid:
            out_tags.append((tag, fname, a, b, d))
    return {"min": vmin, "max": vmax, "flex": flex_min, "fields": out_fields, "tags": out_tags}


def parse_tags(name, toks):
    if "match" not in toks:
        return []
    i = toks.index("match")
    if toks[i + 1] != "tag":
        die(f"{name}: unexpected match")
    j = toks.index("{", i)
    end = block_end(toks, j)
    arms = []
    k = j + 1
    while k < end:
        if toks[k] == "_":
            break
        tag = int(toks[k])
        if toks[k + 1] != "=>" or toks[k + 2] != "{":
            die(f"{name}: unexpected arm {toks[k:k + 4]}")
        m = block_end(toks, k + 2)
        arm = toks[k + 3:m]
        fname = arm[0] if arm[0] != "if" else arm[arm.index("{") + 1]
        arms.append((tag, fname, parse_expr(arm)))
        k = m + 1
    return arms


def reachable(structs, root):
    order, seen = [], set()

    def visit(n):
        if n in seen:
            return
        seen.add(n)
        s = structs[n]
        for _, _, _, d in s["fields"]:
            for ref in re.findall(r"Struct\(&(\w+)\)", d):
                visit(next(k for k, c in CONSTS.items() if c == ref))
        for _, _, _, _, d in s["tags"]:
            for ref in re.findall(r"Struct\(&(\w+)\)", d):
                visit(next(k for k, c in CONSTS.items() if c == ref))
        order.append(n)

    visit(root)
    return order


def main():
    src = Path(sys.argv[1])
    version = re.search(r'^version = "([^"]+)"', (src / "Cargo.toml").read_text(), re.M).group(1)
    out = [
        "// Generated by crates/herald-kafka/tools/gen_prescan_schema.py from the Decodable impls of",
        f"// kafka-protocol {version}; regenerate on every upgrade of that crate, do not edit by hand.",
        "",
        "use kafka_protocol::messages::ApiKey;",
        "",
        "use super::{Field, NEVER, Schema, Tag, Ty::*};",
        "",
        "/// (api, lowest version, highest version, body schema).",
        "pub(super) static REQUESTS: &[(ApiKey, i16, i16, &Schema)] = &[",
    ]
    bodies = []
    emitted = {}
    seen = {}
    for _, stem, _ in APIS:
        text = (src / "src" / "messages" / f"{stem}.rs").read_text()
        for n in re.findall(r"impl Decodable for (\w+) \{", text):
            if n in seen:
                SHARED.add(n)
            seen[n] = stem
    for key, stem, root in APIS:
        CONSTS.clear()
        PREFIX[0] = screaming(key) + "_"
        structs = parse_file(src / "src" / "messages" / f"{stem}.rs")
        if root not in structs:
            die(f"{stem}: no {root}")
        const_name(root)
        # resolve struct references lazily: parse_file already resolved names via CONSTS
        for n in reachable(structs, root):
            s = structs[n]
            c = const_name(n)
            if c in emitted:
                if emitted[c] != s:
                    die(f"two different structs named {n}")
                continue
            emitted[c] = s
            b = [f"static {c}: Schema = Schema {{", f'    name: "{n}",',
                 f"    flexible: {'NEVER' if s['flex'] is None else s['flex']},", "    fields: &["]
            for fname, a, z, d in s["fields"]:
                b.append(f'        Field::new("{fname}", {a}, {z}, {d}),')
            b.append("    ],")
            if s["tags"]:
                b.append("    tags: &[")
                for tag, fname, a, z, d in s["tags"]:
                    b.append(f'        Tag::new({tag}, "{fname}", {a}, {z}, {d}),')
                b.append("    ],")
            else:
                b.append("    tags: &[],")
            b.append("};")
            bodies.append("\n".join(b))
        r = structs[root]
        out.append(f"    (ApiKey::{key}, {r['min']}, {r['max']}, &{const_name(root)}),")
    out.append("];")
    out.append("")
    out.append("\n\n".join(bodies))
    print("\n".join(out))


if __name__ == "__main__":
    main()
