#!/usr/bin/env python3
"""Hostile traffic for vswitch's reliability tests. Every mode sends only from the namespace it
runs in, to the addresses the test gives it, and prints one JSON line: how many packets went out
(sends the kernel refused are counted separately, never retried).

  frames IFACE COUNT SEED SRC_MAC SRC_IP DST_MAC=IP[,DST_MAC=IP...]
      malformed and unusual frames (AF_PACKET): short and truncated headers, lying IPv4/UDP/TCP
      lengths, bad IHL and checksums, IP options, fragments, VLAN and QinQ tags, bad ARP,
      truncated ICMP errors, TTL 0/1, oversized frames (when the interface MTU allows them)
  frames6 IFACE COUNT SEED SRC_MAC SRC_IP6 DST_MAC=IP6[,...]
      malformed and unusual IPv6 frames: truncated headers, lying payload lengths, long,
      looping, unknown and truncated extension-header chains, fragments (first, later,
      atomic), jumbograms, neighbour discovery with hop limit 64, zero-length and overrunning
      options, router advertisements and redirects, spoofed neighbour advertisements and
      sources, bad ICMPv6 checksums, hop limit 0/1
  vnet IFACE COUNT SEED SRC_MAC SRC_IP DST_MAC=IP[,...]
      TCP/UDP frames behind lying virtio-net headers (PACKET_VNET_HDR): GSO type and size,
      header length and checksum offsets that do not fit the frame
  macflood IFACE COUNT         frames from COUNT random source MACs
  storm IFACE COUNT SRC_IP     broadcast frames (ARP requests for nobody)
  synflood DST_IP PORT COUNT   TCP SYNs from random source addresses and ports (raw IPv4)
  vxlan DST_IP PORT COUNT VNI  random bytes, truncated and lying VXLAN headers, bad inner frames
"""
import json
import os
import random
import socket
import struct
import sys
import time

ETH_P_ALL = 3
SOL_PACKET = 263
PACKET_VNET_HDR = 15


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def mac(s):
    return bytes.fromhex(s.replace(":", ""))


def ip4(src, dst, proto, payload, ttl=64, ident=0, frag=0, opts=b"", tot=None, ihl=None, ver=4):
    hl = 20 + len(opts)
    h = struct.pack("!BBHHHBBH4s4s", (ver << 4) | (ihl if ihl is not None else hl // 4), 0,
                    tot if tot is not None else hl + len(payload), ident, frag, ttl, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst)) + opts
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def l4(src, dst, proto, seg):
    ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, len(seg))
    c = csum(ph + seg)
    off = 16 if proto == 6 else 6
    return seg[:off] + struct.pack("!H", c) + seg[off + 2:]


def tcp(sport, dport, flags=0x02, data=b"", doff=5, seq=1):
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, doff << 4, flags, 65535, 0, 0) + data


def udp(sport, dport, data=b"", ulen=None):
    return struct.pack("!HHHH", sport, dport, ulen if ulen is not None else 8 + len(data), 0) + data


class Sender:
    def __init__(self, iface=None, vnet=False):
        self.sent = self.refused = 0
        if iface:
            self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            if vnet:
                self.s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            self.s.bind((iface, 0))

    def send(self, frame, to=None):
        try:
            if to is None:
                self.s.send(frame)
            else:
                self.s.sendto(frame, to)
            self.sent += 1
        except OSError:
            self.refused += 1
        # Bursts of 100, then let the switch drain the TAP queue (500 frames).
        if (self.sent + self.refused) % 100 == 0:
            time.sleep(0.002)

    def report(self, **kw):
        print(json.dumps(dict(sent=self.sent, refused=self.refused, **kw)), flush=True)


def targets(spec):
    out = []
    for t in spec.split(","):
        m, ip = t.split("=")
        out.append((mac(m), ip))
    return out


def malformed(rng, smac, sip, dmac, dip, mtu):
    """One hostile frame: (kind, bytes)."""
    eth = dmac + smac
    sport, dport = rng.randrange(1024, 65535), rng.choice([53, 80, 8080, rng.randrange(1, 65535)])
    good_tcp = l4(sip, dip, 6, tcp(sport, dport, data=os.urandom(rng.randrange(0, 64))))
    good_udp = l4(sip, dip, 17, udp(sport, dport, os.urandom(rng.randrange(0, 64))))
    k = rng.randrange(22)
    if k == 0:
        return "short", eth + b"\x08\x00" + os.urandom(rng.randrange(0, 20))
    if k == 1:
        return "truncated_ip", eth + b"\x08\x00" + ip4(sip, dip, 6, good_tcp)[: rng.randrange(1, 20)]
    if k == 2:
        return "ip_len_long", eth + b"\x08\x00" + ip4(sip, dip, 17, good_udp, tot=rng.randrange(100, 65535))
    if k == 3:
        return "ip_len_short", eth + b"\x08\x00" + ip4(sip, dip, 6, good_tcp, tot=rng.randrange(0, 20))
    if k == 4:
        return "ihl_small", eth + b"\x08\x00" + ip4(sip, dip, 6, good_tcp, ihl=rng.randrange(0, 5))
    if k == 5:
        return "ihl_large", eth + b"\x08\x00" + ip4(sip, dip, 17, udp(1, 2), ihl=15)
    if k == 6:
        p = bytearray(ip4(sip, dip, 17, good_udp))
        p[10] ^= 0xFF
        return "bad_ip_csum", eth + b"\x08\x00" + bytes(p)
    if k == 7:
        n = rng.randrange(1, 11) * 4
        opts = bytes([rng.choice([0, 1, 7, 68, 130, 148, rng.randrange(256)]) for _ in range(n)])
        return "ip_options", eth + b"\x08\x00" + ip4(sip, dip, rng.choice([6, 17]), rng.choice([good_tcp, good_udp]), opts=opts)
    if k == 8:
        frag = rng.choice([0x2000, 0x2000 | rng.randrange(1, 0x1FFF), rng.randrange(1, 0x1FFF)])
        return "fragment", eth + b"\x08\x00" + ip4(sip, dip, rng.choice([6, 17, 1]), good_udp[: rng.randrange(0, 40)], frag=frag, ident=rng.randrange(65536))
    if k == 9:
        return "udp_len_lie", eth + b"\x08\x00" + ip4(sip, dip, 17, udp(sport, dport, b"x" * 10, ulen=rng.choice([0, 3, 7, 19, 1000, 65535])))
    if k == 10:
        return "tcp_doff_lie", eth + b"\x08\x00" + ip4(sip, dip, 6, tcp(sport, dport, doff=rng.choice([0, 1, 4, 15])))
    if k == 11:
        seg = bytearray(rng.choice([good_tcp, good_udp]))
        proto = 6 if len(seg) >= 20 and seg is not None and rng.random() < 0.5 else 17
        seg[-1 if len(seg) > 8 else 0] ^= 0x5A
        return "bad_l4_csum", eth + b"\x08\x00" + ip4(sip, dip, proto, bytes(seg))
    if k == 12:
        return "vlan", eth + b"\x81\x00" + struct.pack("!H", rng.randrange(4096)) + b"\x08\x00" + ip4(sip, dip, 17, good_udp)
    if k == 13:
        return "qinq", eth + b"\x88\xa8\x00\x0a\x81\x00\x00\x14\x08\x00" + ip4(sip, dip, 6, good_tcp)
    if k == 14:
        return "ethertype", eth + struct.pack("!H", rng.randrange(0, 65536)) + os.urandom(rng.randrange(0, 200))
    if k == 15:
        arp = struct.pack("!HHBBH", rng.choice([1, 6, 0xFFFF]), rng.choice([0x0800, 0x86DD, 0]),
                          rng.choice([0, 6, 255]), rng.choice([0, 4, 16]), rng.choice([1, 2, 3, 0x1234]))
        return "arp", eth + b"\x08\x06" + arp + os.urandom(rng.randrange(0, 30))
    if k == 16:
        return "ip_version", eth + b"\x08\x00" + ip4(sip, dip, 17, good_udp, ver=rng.choice([0, 5, 6, 15]))
    if k == 17:
        inner = ip4(dip, sip, rng.choice([6, 17, 1]), os.urandom(8))[: rng.randrange(0, 28)]
        icmp = struct.pack("!BBHI", rng.choice([3, 11, 12, 0, 8]), rng.randrange(16), 0, 0) + inner
        icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
        return "icmp_error", eth + b"\x08\x00" + ip4(sip, dip, 1, icmp)
    if k == 18:
        return "ttl", eth + b"\x08\x00" + ip4(sip, dip, 17, good_udp, ttl=rng.choice([0, 1]))
    if k == 19 and mtu > 1600:
        size = rng.randrange(1600, mtu)
        return "oversized", eth + b"\x08\x00" + ip4(sip, dip, 17, udp(sport, dport, os.urandom(size - 28)))
    if k == 20:
        return "bcast_ip", eth + b"\x08\x00" + ip4(sip, rng.choice(["255.255.255.255", "224.0.0.1"]), 17, good_udp)
    return "zero_l4", eth + b"\x08\x00" + ip4(sip, dip, rng.choice([6, 17, 1]), b"")


def ip6(src, dst, nh, payload, hop=64, plen=None, ver=6):
    a = lambda t: socket.inet_pton(socket.AF_INET6, t)
    return struct.pack("!IHBB", ver << 28, len(payload) if plen is None else plen, nh, hop) + a(src) + a(dst) + payload


def l4_6(src, dst, proto, seg, off):
    a = lambda t: socket.inet_pton(socket.AF_INET6, t)
    ph = a(src) + a(dst) + struct.pack("!IxxxB", len(seg), proto)
    seg = seg[:off] + b"\0\0" + seg[off + 2:]
    return seg[:off] + struct.pack("!H", csum(ph + seg)) + seg[off + 2:]


def ext(nh, body=b"\0" * 6):
    """An extension header (hop-by-hop, routing, destination options) of 8 bytes."""
    return bytes([nh, 0]) + body


def malformed6(rng, smac, sip, dmac, dip):
    """One hostile IPv6 frame: (kind, bytes)."""
    eth = dmac + smac + b"\x86\xdd"
    sport, dport = rng.randrange(1024, 65535), rng.choice([53, 80, rng.randrange(1, 65535)])
    u = l4_6(sip, dip, 17, udp(sport, dport, os.urandom(rng.randrange(0, 64))), 6)
    sn = "ff02::1:ff" + "%02x:%04x" % (rng.randrange(256), rng.randrange(65536))
    nd_dst = rng.choice([dip, sn, "ff02::1", "ff02::2"])
    k = rng.randrange(20)
    if k == 0:
        return "short", eth + ip6(sip, dip, 17, u)[: rng.randrange(0, 40)]
    if k == 1:
        return "plen_long", eth + ip6(sip, dip, 17, u, plen=rng.randrange(len(u) + 1, 65536))
    if k == 2:
        return "plen_short", eth + ip6(sip, dip, 17, u, plen=rng.randrange(0, 8))
    if k == 3:
        n = rng.randrange(9, 40)
        return "ext_long", eth + ip6(sip, dip, 60, b"".join(ext(60) for _ in range(n - 1)) + ext(17) + u)
    if k == 4:
        return "ext_loop", eth + ip6(sip, dip, 60, ext(0) + ext(0) + ext(17) + u)
    if k == 5:
        return "ext_unknown", eth + ip6(sip, dip, 60, ext(rng.choice([253, 254, 139, 140, rng.randrange(256)])) + os.urandom(rng.randrange(0, 40)))
    if k == 6:
        return "ext_truncated", eth + ip6(sip, dip, rng.choice([0, 43, 60, 51]), bytes([17, rng.randrange(1, 255)]) + os.urandom(rng.randrange(0, 30)))
    if k == 7:
        off = rng.choice([0, rng.randrange(1, 8192)])
        m = rng.choice([0, 1])
        frag = bytes([17, 0]) + struct.pack("!HI", (off << 3) | m, rng.randrange(1 << 32))
        kind = "frag_atomic" if off == 0 and m == 0 else ("frag_first" if off == 0 else "frag_later")
        return kind, eth + ip6(sip, dip, 44, frag + u[: rng.randrange(0, len(u) + 1)])
    if k == 8:
        jumbo = bytes([17, 0, 0xC2, 4]) + struct.pack("!I", rng.choice([0, 70000, 1 << 31]))
        return "jumbogram", eth + ip6(sip, dip, 0, jumbo + u, plen=0)
    if k in (9, 10, 11):
        t = rng.choice([133, 135, 136])
        body = struct.pack("!BBHI", t, 0, 0, 0x20000000 if t == 136 else 0)
        if t != 133:
            body += socket.inet_pton(socket.AF_INET6, rng.choice([dip, sip]))
        if k == 9:
            kind, hop, opts = "nd_hop_limit", rng.choice([0, 1, 64, 254]), bytes([1, 1]) + smac
        elif k == 10:
            kind, hop, opts = "nd_zero_option", 255, bytes([1, 0]) + os.urandom(6)
        else:
            kind, hop, opts = "nd_option_overrun", 255, bytes([rng.choice([1, 2, 3, 5]), rng.randrange(2, 255)]) + os.urandom(6)
        return kind, eth + ip6(sip, nd_dst, 58, l4_6(sip, nd_dst, 58, body + opts, 2), hop=hop)
    # Router messages come from the sender's link-local address (from its MAC, EUI-64), as a
    # router's would; from any other source they are invalid (and counted as malformed).
    lla = socket.inet_ntop(socket.AF_INET6, b"\xfe\x80" + bytes(6) + bytes([smac[0] ^ 2]) + smac[1:3] + b"\xff\xfe" + smac[3:6])
    if k == 12:
        ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + bytes([1, 1]) + smac
        return "rogue_ra", eth + ip6(lla, "ff02::1", 58, l4_6(lla, "ff02::1", 58, ra, 2), hop=255)
    if k == 13:
        rd = struct.pack("!BBHI", 137, 0, 0, 0) + socket.inet_pton(socket.AF_INET6, sip) + socket.inet_pton(socket.AF_INET6, dip)
        return "redirect", eth + ip6(lla, dip, 58, l4_6(lla, dip, 58, rd, 2), hop=255)
    if k == 14:
        na = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + socket.inet_pton(socket.AF_INET6, dip) + bytes([2, 1]) + smac
        return "na_spoof", eth + ip6(sip, "ff02::1", 58, l4_6(sip, "ff02::1", 58, na, 2), hop=255)
    if k == 15:
        other = "fd00:dead::%x" % rng.randrange(1, 65535)
        return "src_spoof", eth + ip6(other, dip, 17, l4_6(other, dip, 17, udp(sport, dport, b"x"), 6))
    if k == 16:
        echo = bytearray(l4_6(sip, dip, 58, struct.pack("!BBHHH", 128, 0, 0, 7, 1) + b"p" * 8, 2))
        echo[2] ^= 0x55
        return "bad_icmp6_csum", eth + ip6(sip, dip, 58, bytes(echo))
    if k == 17:
        return "hop_limit", eth + ip6(sip, dip, 17, u, hop=rng.choice([0, 1]))
    if k == 18:
        return "ip_version", eth + ip6(sip, dip, 17, u, ver=rng.choice([0, 4, 7, 15]))
    err = struct.pack("!BBHI", rng.choice([1, 2, 3, 4]), rng.randrange(8), 0, 1280) + ip6(dip, sip, 17, u)[: rng.randrange(0, 60)]
    return "icmp6_error", eth + ip6(sip, dip, 58, l4_6(sip, dip, 58, err, 2))


def vnet_frame(rng, smac, sip, dmac, dip):
    eth = dmac + smac + b"\x08\x00"
    if rng.random() < 0.5:
        pkt = ip4(sip, dip, 6, tcp(rng.randrange(1024, 65535), 80, flags=0x10, data=os.urandom(rng.randrange(0, 3000))))
    else:
        pkt = ip4(sip, dip, 17, udp(rng.randrange(1024, 65535), 53, os.urandom(rng.randrange(0, 3000))))
    frame = eth + pkt
    flags = rng.choice([0, 1, 2, 3])  # NEEDS_CSUM, DATA_VALID
    gso = rng.choice([0, 1, 3, 4, 5, 0x80 | 1])  # none, TCPv4, UDP, TCPv6, UDP_L4, ECN
    hdr_len = rng.choice([0, 14, 34, 54, len(frame), 65535, rng.randrange(65536)])
    gso_size = rng.choice([0, 1, 8, 536, 1448, 9000, 65535])
    cstart = rng.choice([0, 14, 34, len(frame) - 2, len(frame), 65535, rng.randrange(len(frame) + 1)])
    coff = rng.choice([0, 6, 16, 2, 65535])
    return struct.pack("<BBHHHH", flags, gso, hdr_len, gso_size, cstart, coff) + frame


def main():
    mode = sys.argv[1]
    a = sys.argv[2:]
    if mode == "frames6":
        iface, count, seed, smac, sip, tg = a[0], int(a[1]), int(a[2]), mac(a[3]), a[4], targets(a[5])
        rng = random.Random(seed)
        s = Sender(iface)
        kinds = {}
        for _ in range(count):
            dmac, dip = rng.choice(tg)
            kind, f = malformed6(rng, smac, sip, dmac, dip)
            kinds[kind] = kinds.get(kind, 0) + 1
            s.send(f)
        s.report(kinds=kinds)
    elif mode in ("frames", "vnet"):
        iface, count, seed, smac, sip, tg = a[0], int(a[1]), int(a[2]), mac(a[3]), a[4], targets(a[5])
        rng = random.Random(seed)
        mtu = int(open("/sys/class/net/%s/mtu" % iface).read())
        s = Sender(iface, vnet=(mode == "vnet"))
        kinds = {}
        for _ in range(count):
            dmac, dip = rng.choice(tg)
            if mode == "frames":
                kind, f = malformed(rng, smac, sip, dmac, dip, mtu)
            else:
                kind, f = "vnet", vnet_frame(rng, smac, sip, dmac, dip)
            kinds[kind] = kinds.get(kind, 0) + 1
            s.send(f)
        s.report(kinds=kinds)
    elif mode == "macflood":
        s = Sender(a[0])
        for _ in range(int(a[1])):
            s.send(b"\xff" * 6 + b"\x02" + os.urandom(5) + b"\x88\xb5" + bytes(46))
        s.report()
    elif mode == "storm":
        s = Sender(a[0])
        me = open("/sys/class/net/%s/address" % a[0]).read().strip()
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac(me) + socket.inet_aton(a[2]) + bytes(6)
        for i in range(int(a[1])):
            s.send(b"\xff" * 6 + mac(me) + b"\x08\x06" + arp + socket.inet_aton("10.99.%d.%d" % (i // 250 % 250, i % 250 + 1)) + bytes(18))
        s.report()
    elif mode == "synflood":
        dst, port, count = a[0], int(a[1]), int(a[2])
        s = Sender()
        s.s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        rng = random.Random(1)
        for _ in range(count):
            src = "198.18.%d.%d" % (rng.randrange(256), rng.randrange(1, 255))
            seg = l4(src, dst, 6, tcp(rng.randrange(1024, 65535), port, seq=rng.randrange(1 << 32)))
            s.send(ip4(src, dst, 6, seg, ident=rng.randrange(65536)), (dst, 0))
        s.report()
    elif mode == "vxlan":
        dst, port, count, vni = a[0], int(a[1]), int(a[2]), int(a[3])
        s = Sender()
        s.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rng = random.Random(2)
        good = struct.pack("!II", 0x08000000, vni << 8)
        kinds = {}
        for _ in range(count):
            k = rng.randrange(7)
            if k == 0:
                kind, p = "random", os.urandom(rng.randrange(0, 1500))
            elif k == 1:
                kind, p = "short_header", good[: rng.randrange(0, 8)]
            elif k == 2:
                kind, p = "no_inner", good + os.urandom(rng.randrange(0, 14))
            elif k == 3:
                kind, p = "bad_flags", struct.pack("!II", rng.randrange(1 << 32) & ~0x08000000, vni << 8) + os.urandom(60)
            elif k == 4:
                kind, p = "unknown_vni", struct.pack("!II", 0x08000000, rng.randrange(1 << 24) << 8) + os.urandom(60)
            elif k == 5:
                inner = b"\xff" * 6 + b"\x02" + os.urandom(5) + b"\x08\x00" + os.urandom(rng.randrange(0, 60))
                kind, p = "bad_inner", good + inner
            else:
                inner = b"\xff" * 6 + b"\x02" + os.urandom(5) + b"\x08\x00" + ip4("10.9.9.9", "10.9.9.8", 17, udp(1, 2), tot=9000)
                kind, p = "lying_inner", good + inner
            kinds[kind] = kinds.get(kind, 0) + 1
            s.send(p, (dst, port))
        s.report(kinds=kinds)
    else:
        sys.exit("hostile.py: unknown mode %r" % mode)


if __name__ == "__main__":
    main()
