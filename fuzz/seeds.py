#!/usr/bin/env python3
"""Write the seed corpora in fuzz/corpus/TARGET/: well-formed examples of what each target parses
(the fuzzer mutates from there; without valid checksums it would rarely get past the IP header).
Run again after changing it: python3 fuzz/seeds.py"""
import json
import os
import socket
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ip4(src, dst, proto, payload, ttl=64):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, ttl, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


def l4(src, dst, proto, seg):
    ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, len(seg))
    off = 16 if proto == 6 else 6
    return seg[:off] + struct.pack("!H", csum(ph + seg)) + seg[off + 2:]


def tcp(src, dst, sport, dport, flags, data=b"", opts=b""):
    doff = (20 + len(opts)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, doff << 4, flags, 65535, 0, 0) + opts + data
    return l4(src, dst, 6, seg)


def udp(src, dst, sport, dport, data):
    return l4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)


def icmp(t, code, rest):
    m = struct.pack("!BBH", t, code, 0) + rest
    return m[:2] + struct.pack("!H", csum(m)) + m[4:]


A, B, GW, OUT = "10.0.0.2", "10.0.0.3", "10.0.0.1", "198.51.100.7"
MA, MB, MGW = bytes.fromhex("02420a000002"), bytes.fromhex("02420a000003"), bytes.fromhex("024200000001")
TS = bytes.fromhex("0101080a0000000100000002")  # NOP NOP timestamps


def eth(dst, src, et, payload):
    return dst + src + struct.pack("!H", et) + payload


def arp(op, smac, sip, tip):
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + smac + socket.inet_aton(sip) + bytes(6) + socket.inet_aton(tip)


def dnsq(name, qtype=1, qid=0x1234):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def vnet(flags=0, gso=0, hdr_len=0, gso_size=0, cstart=0, coff=0):
    return struct.pack("<BBHHHHH", flags, gso, hdr_len, gso_size, cstart, coff, 0)


frames = {
    "arp_request": eth(b"\xff" * 6, MA, 0x0806, arp(1, MA, A, GW) + bytes(18)),
    "arp_reply": eth(MB, MA, 0x0806, arp(2, MA, A, B)),
    "syn": eth(MGW, MA, 0x0800, ip4(A, OUT, 6, tcp(A, OUT, 40000, 80, 0x02, opts=TS))),
    "udp_dns": eth(MGW, MA, 0x0800, ip4(A, GW, 17, udp(A, GW, 5353, 53, dnsq("web")))),
    "echo": eth(MGW, MA, 0x0800, ip4(A, GW, 1, icmp(8, 0, struct.pack("!HH", 7, 1) + b"ping" * 8))),
    "echo_out": eth(MGW, MA, 0x0800, ip4(A, OUT, 1, icmp(8, 0, struct.pack("!HH", 7, 1) + b"x" * 16))),
    "l2_tcp": eth(MB, MA, 0x0800, ip4(A, B, 6, tcp(A, B, 40000, 7000, 0x18, b"hello", TS))),
}
inner_udp = ip4(OUT, A, 17, udp(OUT, A, 53, 40000, b"abcdefgh"))
frames["icmp_error"] = eth(MGW, MA, 0x0800, ip4(OUT, A, 1, icmp(3, 3, bytes(4) + inner_udp[:28])))
big = ip4(A, B, 6, tcp(A, B, 40000, 7000, 0x10, bytes(range(256)) * 16, TS))  # 4096 bytes of data

corpora = {"frame": {}, "arp": {}, "nat": {}, "vxlan": {}, "dns": {}, "control": {}}
for k, f in frames.items():
    corpora["frame"][k] = vnet() + f
    corpora["arp"][k] = f
    corpora["vxlan"][k] = struct.pack("!II", 0x08000000, 42 << 8) + f
    if f[12:14] == b"\x08\x00":
        # The nat target: [mode (bit 0: partial L4 checksum) | new tuple | IPv4 packet].
        sel = socket.inet_aton("198.51.100.1") + struct.pack("!H", 32768) + socket.inet_aton(OUT) + struct.pack("!H", 80)
        corpora["nat"][k] = b"\0" + sel + f[14:]
        if f[23] in (6, 17):
            corpora["nat"][k + "_partial"] = b"\1" + sel + f[14:]
# IPv6 for the frame target's classification oracle: a neighbour solicitation (to the
# solicited-node group, source link-layer option), an echo request, and a TCP SYN behind
# hop-by-hop, atomic-fragment and destination-options headers.
def a6(text):
    return socket.inet_pton(socket.AF_INET6, text)


def ip6(src, dst, nh, payload, hop=64):
    return struct.pack("!IHBB", 0x60000000, len(payload), nh, hop) + a6(src) + a6(dst) + payload


def l4_6(src, dst, proto, seg, off):
    ph = a6(src) + a6(dst) + struct.pack("!IxxxB", len(seg), proto)
    return seg[:off] + struct.pack("!H", csum(ph + seg)) + seg[off + 2:]


A6, B6, LL6, SN6 = "fd00::2", "2001:db8::7", "fe80::42:acff:fe14:2", "ff02::1:ff00:7"
ns6 = struct.pack("!BBHI", 135, 0, 0, 0) + a6("fd00::7") + bytes([1, 1]) + MA
corpora["frame"]["v6_ns"] = vnet() + eth(b"\x33\x33\xff\x00\x00\x07", MA, 0x86DD, ip6(LL6, SN6, 58, l4_6(LL6, SN6, 58, ns6, 2), 255))
echo6 = struct.pack("!BBHHH", 128, 0, 0, 7, 1) + b"ping" * 4
corpora["frame"]["v6_echo"] = vnet() + eth(MGW, MA, 0x86DD, ip6(A6, B6, 58, l4_6(A6, B6, 58, echo6, 2)))
syn6 = struct.pack("!HHIIBBHHH", 40000, 443, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
exts6 = bytes([44, 0, 1, 4, 0, 0, 0, 0]) + bytes([60, 0, 0, 0, 0, 0, 0, 0]) + bytes([6, 0, 1, 4, 0, 0, 0, 0])
corpora["frame"]["v6_syn_ext"] = vnet() + eth(MGW, MA, 0x86DD, ip6(A6, B6, 0, exts6 + l4_6(A6, B6, 6, syn6, 16)))
# ICMP errors for the nat target quoting a TCP SYN (first 8 bytes of TCP, as routers do), a whole
# UDP datagram, and an echo request; the new tuple is the error's direction (remote -> endpoint).
err_sel = socket.inet_aton(OUT) + struct.pack("!H", 443) + socket.inet_aton(A) + struct.pack("!H", 40000)
q_tcp = ip4("198.51.100.1", OUT, 6, tcp("198.51.100.1", OUT, 61000, 443, 0x02))[:28]
q_udp = ip4("198.51.100.1", OUT, 17, udp("198.51.100.1", OUT, 61000, 53, b"query"))
q_echo = ip4("198.51.100.1", OUT, 1, icmp(8, 0, struct.pack("!HH", 61000, 1) + b"x" * 8))
for k, q in {"icmp_error_tcp": q_tcp, "icmp_error_udp_whole": q_udp, "icmp_error_echo": q_echo}.items():
    corpora["nat"][k] = b"\0" + err_sel + ip4(OUT, "198.51.100.1", 1, icmp(3, 3 if "udp" in k else 1, bytes(4) + q))
# A TCP super-frame (GSO TCPv4, partial checksum) as a TAP hands it over.
sf = eth(MB, MA, 0x0800, big)
corpora["frame"]["superframe"] = vnet(1, 1, 14 + 20 + 32, 1448, 34, 16) + sf


def udp_zero_sum(src, dst, sport, dport, data):
    # A UDP datagram (checksum field 0) whose first two data bytes make its checksum come out as
    # zero: completing it must store all ones (RFC 768), not "no checksum".
    seg = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + b"\0\0" + data
    ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(seg))
    return seg[:8] + struct.pack("!H", csum(ph + seg)) + seg[10:]


corpora["frame"]["udp_zero_csum"] = vnet(1, 0, 0, 0, 34, 6) + eth(MB, MA, 0x0800, ip4(A, B, 17, udp_zero_sum(A, B, 5000, 53, b"hello world!")))
rev6 = ".".join(reversed(socket.inet_pton(socket.AF_INET6, "fd00::4").hex())) + ".ip6.arpa"
for name, q in {"a_web": dnsq("web"), "aaaa": dnsq("db.front", 28), "any": dnsq("x.y.z", 255), "long": dnsq("a" * 63 + ".b"),
                "aaaa_dual": dnsq("dual", 28), "any_dual": dnsq("dual", 255), "ptr4": dnsq("2.0.0.10.in-addr.arpa", 12), "ptr6": dnsq(rev6, 12)}.items():
    corpora["dns"][name] = q
bodies = [
    (0, {"name": "front", "subnet": "172.20.0.0/24", "gateway": "172.20.0.1", "mtu": 1500, "icc": False}),
    (0, {"name": "ov", "subnet": "10.250.0.0/24", "vni": 42, "peers": ["10.240.0.2"], "vxlan_port": 4789}),
    (1, {"netns": "app", "network": "front", "ip": "172.20.0.5", "mac": "02:42:ac:14:00:05", "ifname": "eth1", "aliases": ["web"], "allow_spoof": True}),
    (2, {"netns": "app", "spec": "127.0.0.1:8080:80/udp", "network": "front"}),
    (3, {"netns": "app", "spec": "8080/tcp"}),
    (4, {"iface": "up0", "ip": "192.168.50.2/24", "gateway": "192.168.50.1"}),
    (5, {"network": "ov", "mac": "02:42:0a:fa:00:0c", "vtep": "10.240.0.2"}),
    (6, {"ip": "10.240.0.3"}),
]
for i, (sel, b) in enumerate(bodies):
    corpora["control"]["req%d" % i] = bytes([sel]) + json.dumps(b).encode()
corpora["control"]["mac"] = b"\x07" + b"02-42-ac-14-00-02"
corpora["control"]["cidr"] = b"\x07" + b"10.0.0.0/8"


# The datapath harness (fuzz_targets/datapath.rs): selector 0 = a (10.9.0.2), 1 = b (10.9.0.3,
# no port security), 2 = c (10.9.1.2 on the linked network), 3 = the uplink (198.51.100.1),
# 4 = d (10.9.2.2 on the overlay network "ov", VNI 42), 5 = the VTEP:
# [5 | sender (even: the peer) | GRO size (big-endian, 0: one datagram) | VXLAN datagrams].
def gw_mac(name):
    h = 0x811C9DC5
    for ch in name.encode():
        h = ((h ^ ch) * 0x01000193) & 0xFFFFFFFF
    return bytes([0x02, 0x76, 0x73]) + h.to_bytes(4, "big")[1:]


def ep_mac(ip):
    return bytes([0x02, 0x42]) + socket.inet_aton(ip)


FA, FB, FC, UP, REMOTE = "10.9.0.2", "10.9.0.3", "10.9.1.2", "198.51.100.1", "203.0.113.9"
GF, GB, GU = gw_mac("front"), gw_mac("back"), gw_mac("uplink/up0")
MFA, MFB, MFC, MR = ep_mac(FA), ep_mac(FB), ep_mac(FC), bytes.fromhex("0200000000fe")
dp = {
    "a_arp_gw": (0, eth(b"\xff" * 6, MFA, 0x0806, arp(1, MFA, FA, "10.9.0.1"))),
    "a_arp_b": (0, eth(b"\xff" * 6, MFA, 0x0806, arp(1, MFA, FA, FB))),
    "a_to_b_tcp": (0, eth(MFB, MFA, 0x0800, ip4(FA, FB, 6, tcp(FA, FB, 40000, 80, 0x18, b"data", TS)))),
    "a_to_c_routed": (0, eth(GF, MFA, 0x0800, ip4(FA, FC, 17, udp(FA, FC, 5000, 53, b"hello")))),
    "a_out_syn": (0, eth(GF, MFA, 0x0800, ip4(FA, REMOTE, 6, tcp(FA, REMOTE, 40000, 443, 0x02, opts=TS)))),
    "a_dns": (0, eth(GF, MFA, 0x0800, ip4(FA, "10.9.0.1", 17, udp(FA, "10.9.0.1", 5353, 53, dnsq("web"))))),
    "a_dns_out": (0, eth(GF, MFA, 0x0800, ip4(FA, "10.9.0.1", 17, udp(FA, "10.9.0.1", 5353, 53, dnsq("example.org"))))),
    "a_ping_gw": (0, eth(GF, MFA, 0x0800, ip4(FA, "10.9.0.1", 1, icmp(8, 0, struct.pack("!HH", 9, 1) + b"p" * 16)))),
    "b_spoof": (1, eth(b"\xff" * 6, bytes.fromhex("020000001234"), 0x0800, ip4("10.9.0.77", FA, 17, udp("10.9.0.77", FA, 1, 2, b"")))),
    "c_super": (2, eth(GB, MFC, 0x0800, ip4(FC, FA, 6, tcp(FC, FA, 40001, 80, 0x10, bytes(range(256)) * 12, TS)))),
    "up_syn_published": (3, eth(GU, MR, 0x0800, ip4(REMOTE, UP, 6, tcp(REMOTE, UP, 50000, 8080, 0x02)))),
    "up_arp": (3, eth(b"\xff" * 6, MR, 0x0806, arp(1, MR, "198.51.100.254", UP))),
    "up_arp_reply": (3, eth(GU, MR, 0x0806, arp(2, MR, "198.51.100.254", UP))),
    "up_icmp_err": (3, eth(GU, MR, 0x0800, ip4(REMOTE, UP, 1, icmp(3, 1, bytes(4) + ip4(UP, REMOTE, 6, tcp(UP, REMOTE, 40000, 443, 0x02))[:28])))),
}
FD, GO, RD = "10.9.2.2", gw_mac("ov"), "10.9.2.50"
MFD, MRD = ep_mac(FD), bytes.fromhex("0200000002fe")
dp.update({
    "d_arp_gw": (4, eth(b"\xff" * 6, MFD, 0x0806, arp(1, MFD, FD, "10.9.2.1"))),
    "d_to_remote": (4, eth(MRD, MFD, 0x0800, ip4(FD, RD, 17, udp(FD, RD, 5000, 7000, b"over")))),
    "d_out_syn": (4, eth(GO, MFD, 0x0800, ip4(FD, REMOTE, 6, tcp(FD, REMOTE, 40002, 443, 0x02, opts=TS)))),
    "d_super": (4, eth(MRD, MFD, 0x0800, ip4(FD, RD, 6, tcp(FD, RD, 40003, 80, 0x18, bytes(range(256)) * 12, TS)))),
})

# IPv6 on the dual-stack networks: front is fd00:9::/64 (a = fd00:9::2), back fd00:9:1::/64
# (c = fd00:9:1::2).
A6F, G6F, C6 = "fd00:9::2", "fd00:9::1", "fd00:9:1::2"
LLA = "fe80::42:aff:fe09:2"
ns_gw = struct.pack("!BBHI", 135, 0, 0, 0) + a6(G6F) + bytes([1, 1]) + MFA
rs = struct.pack("!BBHI", 133, 0, 0, 0) + bytes([1, 1]) + MFA
echo_gw6 = struct.pack("!BBHHH", 128, 0, 0, 9, 1) + b"v6" * 8
u6 = struct.pack("!HHHH", 5000, 53, 8 + 5, 0) + b"hello"
dp.update({
    "a_ns_gw6": (0, eth(b"\x33\x33\xff\x00\x00\x01", MFA, 0x86DD, ip6(LLA, "ff02::1:ff00:1", 58, l4_6(LLA, "ff02::1:ff00:1", 58, ns_gw, 2), 255))),
    "a_rs": (0, eth(b"\x33\x33\x00\x00\x00\x02", MFA, 0x86DD, ip6(LLA, "ff02::2", 58, l4_6(LLA, "ff02::2", 58, rs, 2), 255))),
    "a_ping6_gw": (0, eth(GF, MFA, 0x86DD, ip6(A6F, G6F, 58, l4_6(A6F, G6F, 58, echo_gw6, 2)))),
    "a_to_c_v6": (0, eth(GF, MFA, 0x86DD, ip6(A6F, C6, 17, l4_6(A6F, C6, 17, u6, 6)))),
    "a_to_c_v6_hop1": (0, eth(GF, MFA, 0x86DD, ip6(A6F, C6, 17, l4_6(A6F, C6, 17, u6, 6), 1))),
})


def vx(vni, frame):
    return struct.pack("!II", 0x08000000, vni << 8) + frame


def segments(src, dst, sport, dport, data, mss, smac, dmac):
    # TCP segments of one flow, as a peer's GSO sends them (each a full-size datagram but the last).
    out = []
    for i in range(0, len(data), mss):
        seg = tcp(src, dst, sport, dport, 0x10, data[i:i + mss], TS)
        seg = seg[:4] + struct.pack("!I", 1000 + i) + seg[8:]
        seg = l4(src, dst, 6, seg[:16] + b"\0\0" + seg[18:])
        out.append(vx(42, eth(dmac, smac, 0x0800, ip4(src, dst, 6, seg))))
    return out


vtep = {
    "v_arp_gw": (0, [vx(42, eth(b"\xff" * 6, MRD, 0x0806, arp(1, MRD, RD, "10.9.2.1")))]),
    "v_arp_d": (0, [vx(42, eth(b"\xff" * 6, MRD, 0x0806, arp(1, MRD, RD, FD)))]),
    "v_to_d": (0, [vx(42, eth(MFD, MRD, 0x0800, ip4(RD, FD, 17, udp(RD, FD, 7000, 5000, b"back"))))]),
    "v_ping_gw": (0, [vx(42, eth(GO, MRD, 0x0800, ip4(RD, "10.9.2.1", 1, icmp(8, 0, struct.pack("!HH", 5, 1) + b"q" * 16))))]),
    "v_routed_out": (0, [vx(42, eth(GO, MRD, 0x0800, ip4(RD, REMOTE, 6, tcp(RD, REMOTE, 40004, 443, 0x02, opts=TS))))]),
    "v_routed_front": (0, [vx(42, eth(GO, MRD, 0x0800, ip4(RD, FA, 17, udp(RD, FA, 7000, 53, b"x"))))]),
    "v_tcp_gro": (0, segments(RD, FD, 7001, 80, bytes(range(256)) * 8, 1000, MRD, MFD)),
    "v_unknown_vni": (0, [vx(43, eth(MFD, MRD, 0x0800, ip4(RD, FD, 17, udp(RD, FD, 1, 2, b""))))]),
    "v_stranger": (1, [vx(42, eth(MFD, MRD, 0x0800, ip4(RD, FD, 17, udp(RD, FD, 1, 2, b""))))]),
}
# The nat6 target: [mode (bit 0: partial L4 checksum) | new tuple (src, sport, dst, dport) |
# IPv6 packet]: UDP, a TCP SYN, an echo request (masquerade to the uplink's IPv6 address), and a
# port unreachable quoting the translated UDP datagram (the error's direction back).
E6, U6, R6 = "fd00:96::2", "2001:db8:60::2", "2001:db8:60::1"
sel6 = a6(U6) + struct.pack("!H", 61000) + a6(R6) + struct.pack("!H", 53)
corpora["nat6"] = {}
u6s = struct.pack("!HHHH", 40000, 53, 8 + 5, 0) + b"query"
corpora["nat6"]["udp"] = b"\0" + sel6 + ip6(E6, R6, 17, l4_6(E6, R6, 17, u6s, 6))
corpora["nat6"]["udp_partial"] = b"\1" + sel6 + ip6(E6, R6, 17, l4_6(E6, R6, 17, u6s, 6))
syn6n = struct.pack("!HHIIBBHHH", 40000, 53, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
corpora["nat6"]["tcp_syn"] = b"\0" + sel6 + ip6(E6, R6, 6, l4_6(E6, R6, 6, syn6n, 16))
echo6n = struct.pack("!BBHHH", 128, 0, 0, 7, 1) + b"ping"
corpora["nat6"]["echo"] = b"\0" + sel6 + ip6(E6, R6, 58, l4_6(E6, R6, 58, echo6n, 2))
q6 = ip6(U6, R6, 17, l4_6(U6, R6, 17, struct.pack("!HHHH", 61000, 53, 13, 0) + b"query", 6))
err6 = struct.pack("!BBHI", 1, 4, 0, 0) + q6
err_sel6 = a6(R6) + struct.pack("!H", 53) + a6(E6) + struct.pack("!H", 40000)
corpora["nat6"]["port_unreachable"] = b"\0" + err_sel6 + ip6(R6, U6, 58, l4_6(R6, U6, 58, err6, 2))
corpora["datapath"] = {}
for name, (sel, f) in dp.items():
    hdr = vnet()[:10] if sel == 3 else vnet()
    if name in ("c_super", "d_super"):
        hdr = vnet(1, 1, 14 + 20 + 32, 1448, 34, 16)
    corpora["datapath"][name] = bytes([sel]) + hdr + f
for name, (sender, dgrams) in vtep.items():
    gro = len(dgrams[0]) if len(dgrams) > 1 else 0
    corpora["datapath"][name] = bytes([5, sender]) + struct.pack("!H", gro) + b"".join(dgrams)

for target, files in corpora.items():
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
print("seeds written:", {t: len(f) for t, f in corpora.items()})
