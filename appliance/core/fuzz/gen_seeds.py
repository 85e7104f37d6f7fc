#!/usr/bin/env python3
"""Write the seed inputs of the fuzz targets into seeds/<target>/ (committed).

Run it again when a format changes (python3 gen_seeds.py); the output is the same
byte for byte on every run (fixed zip timestamps), except the timestamps that
genisoimage writes into the ISO images. scripts/fuzz reads seeds/ and writes what libFuzzer finds
to the git-ignored corpus/.

Targets: payload_decode, overlay_parse, http_response, meta_data, network_data,
arp_frame, config_drive (needs genisoimage). uapi_parse's seeds are requests captured from stock `wg`;
datagram's are inputs its own runs found (structured: written by libFuzzer, not
by hand): a 10-minute run's corpus after `cargo fuzz cmin datagram`, every 14th
by size (47 of 662). The keys are obviously fake: readable base64 that decodes to 32 bytes.
"""
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
# What the config_drive target puts in front of its input: the ISO system area.
ISO_SYSTEM_AREA = 16 * 2048

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
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = 0o600 << 16
            z.writestr(info, data)
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


def meta_doc(meta):
    """A meta_data.json as Nova writes it."""
    return json.dumps({
        "uuid": "83679162-1378-4288-a2d4-70e13ec132aa",
        "meta": meta,
        "hostname": "cloudpipe-demo-net",
        "name": "cloudpipe-demo-net",
        "launch_index": 0,
        "availability_zone": "nova",
        "random_seed": "SGVsbG8gc2VlZA==",
        "project_id": "6e4f8f6d8b1a4c4b9d2f5a1e3c7b9d0e",
        "devices": [],
    }, indent=2)


def meta_data_seeds():
    yield "nova-empty", meta_doc({})
    yield "owner-only", meta_doc({"owner": "ops"})
    yield "add", meta_doc({"cloudpipe-add-0": f"v1 carol {CAROL} - 10.0.0.252"})
    yield "add-revoke", meta_doc({
        "cloudpipe-add-0": f"v1 carol {CAROL} {ALICE_PSK} 10.0.0.252",
        "cloudpipe-revoke-0": f"v1 {ALICE}",
        "owner": "ops",
    })
    yield "no-meta", json.dumps({"uuid": "u", "hostname": "h"})
    yield "meta-not-object", json.dumps({"meta": ["a"]})
    yield "non-string", json.dumps({"meta": {"a": 1}})


def http_seeds():
    # Two limit bytes (x4: header and body caps) and a read-size seed, then the response.
    def limits(header, body, seed=7):
        return bytes([header, body, seed])
    yield "content-length", limits(40, 40) + b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"
    yield "chunked", limits(40, 40) + (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
    yield "read-to-close", limits(20, 20, 3) + b"HTTP/1.0 200 OK\r\nServer: nova\r\n\r\nbody until close"
    yield "not-found", limits(20, 20) + b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"
    yield "server-error", limits(20, 20) + b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n"
    yield "too-large", limits(20, 2) + b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    yield "header-at-limit", limits(10, 10, 1) + b"HTTP/1.1 200 OK\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\nok"
    yield "two-lengths", limits(40, 40) + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"


def config_drive_seeds():
    """ISO images as Nova writes them (genisoimage -J -r -V config-2), without the
    system area the target adds back."""
    if shutil.which("genisoimage") is None:
        print("gen_seeds: genisoimage not found, config_drive seeds skipped", file=sys.stderr)
        return
    full = zip_of([("cloudpipe.json", json.dumps(MINIMAL))])
    layouts = {
        "nova": {
            "openstack/latest/user_data": guest(full),
            "openstack/latest/meta_data.json": meta_doc({"owner": "ops"}),
            "openstack/latest/network_data.json": json.dumps({"links": [], "networks": [], "services": []}),
            "openstack/latest/vendor_data.json": "{}",
            "ec2/latest/meta-data.json": "{}",
            "ec2/latest/user-data": guest(full),
        },
        "meta-only": {"openstack/latest/meta_data.json": meta_doc({})},
        "long-names": {"openstack/latest/a-file-name-longer-than-the-eight-dot-three-rule.json": "{}",
                       "openstack/latest/user_data": b"x" * 3000},
    }
    for name, files in layouts.items():
        with tempfile.TemporaryDirectory() as d:
            tree = os.path.join(d, "tree")
            for path, data in files.items():
                full_path = os.path.join(tree, path)
                os.makedirs(os.path.dirname(full_path), exist_ok=True)
                with open(full_path, "wb") as f:
                    f.write(data.encode() if isinstance(data, str) else data)
            iso = os.path.join(d, "cd.iso")
            subprocess.run(["genisoimage", "-quiet", "-no-pad", "-J", "-r", "-V", "config-2",
                            "-o", iso, tree], check=True)
            with open(iso, "rb") as f:
                image = f.read()
        yield name, image[ISO_SYSTEM_AREA:]


def network_data_seeds():
    # One byte picks the NIC's MAC (see the target), then the document.
    nova = {
        "links": [
            {"id": "tap1", "vif_id": "1", "type": "ovs", "mtu": 1442,
             "ethernet_mac_address": "fa:16:3e:00:00:01"},
            {"id": "tap2", "vif_id": "2", "type": "ovs", "mtu": 9000,
             "ethernet_mac_address": "fa:16:3e:00:00:02"},
        ],
        "networks": [{"id": "network0", "type": "ipv4_dhcp", "link": "tap1",
                      "network_id": "d7a9c6e1-0000-4000-8000-000000000001"}],
        "services": [],
    }
    yield "two-links", b"\x00" + json.dumps(nova).encode()
    yield "upper-case-mac", b"\x01" + json.dumps(nova).encode()
    one = {"links": [{"id": "tap1", "type": "ovs", "mtu": 1450}], "networks": [], "services": []}
    yield "one-link", b"\x03" + json.dumps(one).encode()
    yield "null-mtu", b"\x00" + json.dumps({"links": [{"id": "t", "mtu": None}]}).encode()
    yield "empty", b"\x00{}"


def arp_seeds():
    ours = bytes([0xfa, 0x16, 0x3e, 0, 0, 2])
    theirs = bytes([0xfa, 0x16, 0x3e, 0, 0, 9])

    def frame(op, sha, spa, tpa):
        eth = b"\xff" * 6 + sha + b"\x08\x06"
        arp = b"\x00\x01\x08\x00\x06\x04" + op.to_bytes(2, "big") + sha + bytes(spa) + b"\x00" * 6 + bytes(tpa)
        return eth + arp
    yield "reply-for-250", frame(2, theirs, [10, 0, 0, 250], [0, 0, 0, 0])
    yield "request-from-2", frame(1, theirs, [10, 0, 0, 2], [10, 0, 0, 1])
    yield "rival-probe-251", frame(1, theirs, [0, 0, 0, 0], [10, 0, 0, 251])
    yield "our-probe", frame(1, ours, [0, 0, 0, 0], [10, 0, 0, 250])
    yield "other-address", frame(2, theirs, [10, 0, 0, 9], [0, 0, 0, 0])


def write(target, seeds):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds:
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("payload_decode", payload_seeds())
    write("overlay_parse", overlay_seeds())
    write("meta_data", meta_data_seeds())
    write("http_response", http_seeds())
    write("config_drive", config_drive_seeds())
    write("network_data", network_data_seeds())
    write("arp_frame", arp_seeds())
    print(f"seeds written under {SEEDS}", file=sys.stderr)
