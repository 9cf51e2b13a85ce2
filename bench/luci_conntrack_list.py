#!/usr/bin/env python3
"""What LuCI's `luci getConntrackList` rpc does (modules/luci-base/ucode/sys.uc,
conntrack_list()), for comparison only: read /proc/net/nf_conntrack line by
line, skip TIME_WAIT, keep the first src/dst/sport/dport (original
direction), sum bytes/packets of both directions, copy other k=v fields,
and answer the whole table as one JSON document. ctrack never reads /proc;
this script exists only so bench/web.sh can time the approach it replaces.
"""
import json
import re
import sys

PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp", 47: "gre", 136: "udplite", 33: "dccp"}
LINE = re.compile(r"^(ipv[46]) +([0-9]+) +\S+ +([0-9]+)( +.+)$")


def conntrack_list():
    result = []
    with open("/proc/net/nf_conntrack") as f:
        for line in f:
            m = LINE.match(line)
            if not m or "TIME_WAIT" in line:
                continue
            e = {"layer3": m.group(1), "layer4": PROTOS.get(int(m.group(3)), "unknown")}
            rest = m.group(4).split()
            if rest and rest[0].isdigit():
                e["timeout"] = int(rest.pop(0))
            for kv in rest:
                if "=" not in kv:
                    continue
                k, v = kv.split("=", 1)
                if k in ("bytes", "packets"):
                    e[k] = e.get(k, 0) + int(v)
                elif k in ("src", "dst", "sport", "dport"):
                    if k not in e:
                        e[k] = int(v) if k in ("sport", "dport") else v
                else:
                    e[k] = v
            result.append(e)
    return result


if __name__ == "__main__":
    sys.stdout.write(json.dumps({"result": conntrack_list()}))
