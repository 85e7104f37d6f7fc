#!/usr/bin/env python3
"""Write seed inputs for the fuzz targets into corpus/<target>/ (git-ignored).

Seeds are regenerated on every run of scripts/fuzz; they are small and only give
libFuzzer a valid starting point for each format, so nothing is committed.
The keys are obviously fake: readable base64 that decodes to 32 bytes.
"""
import base64
import io
import json
import os
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

SERVER_KEY = "FAKEserverPRIVATEkeyEXAMPLEdoNOTuse00000000="
ALICE = "FAKEalicePUBLICkeyEXAMPLE000000000000000000="
ALICE_PSK = "FAKEalicePRESHAREDkeyEXAMPLE000000000000000="
BOB = "FAKEbobPUBLICkeyEXAMPLE00000000000000000000="
CAROL = "FAKEcarolPUBLICkeyEXAMPLE000000000000000000="

FULL = {
    "version": 1,
    "network": "demo-net",
    "cidr": "10.0.0.0/24",
    "gateway": "10.0.0.1",
    "address": "10.0.0.2",
    "interface": "eth0",
    "mtu": 1420,
    "tenant_mtu": 1450,
    "listen_port": 1194,
    "pool": {"first": "10.0.0.250", "last": "10.0.0.254"},
    "routes": ["10.0.0.0/24", "192.168.10.0/24"],
    "dns": ["10.0.0.3"],
    "mode": "proxy-arp",
    "client_to_client": False,
    "private_key": SERVER_KEY,
    "peers": [
        {"name": "alice", "public_key": ALICE, "preshared_key": ALICE_PSK,
         "address": "10.0.0.250"},
        {"name": "bob", "public_key": BOB, "address": "10.0.0.251"},
    ],
}
MINIMAL = {"version": 1, "network": "n", "cidr": "10.1.0.0/29",
           "private_key": SERVER_KEY, "mode": "masquerade"}

NOVA_AUTORUN = r'''#!/bin/sh
export LC_ALL=C
export VPN_IP=`ifconfig  | grep 'inet addr:'| grep -v '127.0.0.1' | cut -d: -f2 | awk '{print $1}'`
export BROADCAST=`ifconfig  | grep 'inet addr:'| grep -v '127.0.0.1' | cut -d: -f3 | awk '{print $1}'`
DHCP_LOWER=`echo $BROADCAST | awk -F. '{print $1"."$2"."$3"." $4 - 5 }'`
DHCP_UPPER=`echo $BROADCAST | awk -F. '{print $1"."$2"."$3"." $4 - 1 }'`
echo "push \"route 10.10.0.0 255.255.0.0 $GATEWAY\"" >> server.conf
echo "duplicate-cn" >> server.conf
/etc/init.d/openvpn start
'''


def zip_of(members, method=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def guest(b):
    return base64.encodebytes(b)  # wrapped at 76 columns, like Nova's encodestring


def nova(b):
    return base64.b64encode(guest(b))


def payload_seeds():
    full = zip_of([("cloudpipe.json", json.dumps(FULL, indent=2))])
    nova_zip = zip_of([("autorun.sh", NOVA_AUTORUN), ("crl.pem", "crl"),
                       ("server.key", "key"), ("ca.crt", "ca"), ("server.crt", "crt")])
    yield "full.zip", full
    yield "full.guest", guest(full)
    yield "full.nova", nova(full)
    yield "stored.zip", zip_of([("cloudpipe.json", json.dumps(FULL))], zipfile.ZIP_STORED)
    yield "minimal.zip", zip_of([("cloudpipe.json", json.dumps(MINIMAL))])
    yield "minimal.guest", guest(zip_of([("cloudpipe.json", json.dumps(MINIMAL))]))
    yield "nova-legacy.zip", nova_zip
    yield "nova-legacy.guest", guest(nova_zip)
    yield "slip.zip", zip_of([("../../etc/cron.d/x", "boom"), ("cloudpipe.json", "{}")])
    yield "bomb.zip", zip_of([("cloudpipe.json", b"\0" * (256 * 1024 + 1))])
    yield "bad-json.zip", zip_of([("cloudpipe.json", "{")])
    yield "empty.zip", zip_of([])
    bad = dict(FULL, peers=[dict(FULL["peers"][0], address="10.0.0.7")])
    yield "bad-peer.zip", zip_of([("cloudpipe.json", json.dumps(bad))])


def overlay_seeds():
    yield "add", f"cloudpipe-add-0=v1 carol {CAROL} - 10.0.0.252\n"
    yield "add-psk", f"cloudpipe-add-0=v1 carol {CAROL} {ALICE_PSK} 10.0.0.252\n"
    yield "revoke", f"cloudpipe-revoke-0=v1 {ALICE} {BOB}\n"
    yield "mixed", (f"owner=ops\nhostname=vpn\ncloudpipe-add-0=v1 carol {CAROL} - 10.0.0.252\n"
                    f"cloudpipe-revoke-0=v1 {ALICE}\n")
    yield "re-add", f"cloudpipe-add-0=v1 alice {ALICE} {ALICE_PSK} 10.0.0.250\n"


def write(target, seeds):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds:
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("payload_decode", payload_seeds())
    write("overlay_parse", overlay_seeds())
    print(f"seeds written under {CORPUS}", file=sys.stderr)
