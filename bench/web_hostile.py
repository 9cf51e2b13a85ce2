#!/usr/bin/env python3
"""Ten hostile LAN clients against ctrack's web server, for bench/web.sh
(issue 11). Each client has an address of its own (127.0.0.11 ...
127.0.0.20, as ten devices on a LAN would) and runs until the time is up:

  3  slow readers of the largest reply (the whole list, ?sort=id), read at
     about 16 KB/s with a small receive buffer, reconnecting when cut
  2  HTTP/1.0 full lists (?sort=-bytes), read as fast as they come, again
     and again (what `curl -0` does)
  2  event-stream floods: 20 streams each, reopened as they close
  2  connection floods: connections that never send a byte, 300 held each
  1  maximum-size heads: 64 header lines of 120 bytes, and a 1 MiB header
     line now and then

usage: web_hostile.py HOST PORT SECONDS
Prints one line of counts per kind of client at the end.
"""
import socket
import sys
import threading
import time

HOST, PORT, SECONDS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
END = time.time() + SECONDS
counts = {}
lock = threading.Lock()


def count(kind, what):
    with lock:
        counts.setdefault(kind, {}).setdefault(what, 0)
        counts[kind][what] += 1


def conn(src, rcvbuf=None, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((src, 0))
    s.settimeout(timeout)
    s.connect((HOST, PORT))
    return s


def status(data):
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def slow_reader(src):
    while time.time() < END:
        try:
            s = conn(src, rcvbuf=8192)
            s.sendall(b"GET /api/v1/connections?sort=id HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST.encode())
            first = True
            while time.time() < END:
                d = s.recv(1600)
                if not d:
                    count("slow_reader", "ended")
                    break
                if first:
                    count("slow_reader", "status_%d" % status(d))
                    first = False
                time.sleep(0.1)
            s.close()
        except OSError:
            count("slow_reader", "error")
            time.sleep(0.5)


def http10_list(src):
    while time.time() < END:
        try:
            s = conn(src, timeout=30)
            s.sendall(b"GET /api/v1/connections?sort=-bytes HTTP/1.0\r\nHost: %s\r\n\r\n" % HOST.encode())
            got, first = 0, None
            while True:
                d = s.recv(65536)
                if not d:
                    break
                if first is None:
                    first = status(d)
                got += len(d)
            s.close()
            count("http10_list", "status_%s" % first)
            if first != 200:
                time.sleep(0.5)
        except OSError:
            count("http10_list", "error")
            time.sleep(0.5)


def sse_flood(src):
    held = []
    while time.time() < END:
        try:
            while len(held) < 20 and time.time() < END:
                s = conn(src)
                s.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST.encode())
                d = s.recv(512)
                count("sse_flood", "status_%d" % status(d))
                if status(d) == 200:
                    s.setblocking(False)
                    held.append(s)
                else:
                    s.close()
                    time.sleep(0.2)
            # drop one now and then, so places are taken again at once
            time.sleep(0.5)
            if held:
                held.pop(0).close()
        except OSError:
            count("sse_flood", "error")
            time.sleep(0.2)
    for s in held:
        s.close()


def conn_flood(src):
    held = []
    while time.time() < END:
        try:
            held.append(conn(src, timeout=2))
            count("conn_flood", "opened")
            if len(held) > 300:
                held.pop(0).close()
        except OSError:
            count("conn_flood", "error")
            time.sleep(0.05)
    for s in held:
        s.close()


def big_heads(src):
    n = 0
    while time.time() < END:
        n += 1
        try:
            s = conn(src)
            head = b"GET /api/v1/stats HTTP/1.1\r\nHost: %s\r\n" % HOST.encode()
            if n % 5 == 0:
                head += b"X-Big: " + b"a" * (1 << 20) + b"\r\n"
            else:
                head += b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"b" * 110) for i in range(62))
            s.sendall(head + b"\r\n")
            d = s.recv(512)
            count("big_heads", "status_%d" % status(d))
            s.close()
        except OSError:
            count("big_heads", "error")
        time.sleep(0.05)


kinds = [slow_reader] * 3 + [http10_list] * 2 + [sse_flood] * 2 + [conn_flood] * 2 + [big_heads]
threads = []
for i, k in enumerate(kinds):
    t = threading.Thread(target=k, args=("127.0.0.%d" % (11 + i),), daemon=True)
    t.start()
    threads.append(t)
for t in threads:
    t.join(SECONDS + 40)
for k in sorted(counts):
    print("%-12s %s" % (k, " ".join("%s=%d" % kv for kv in sorted(counts[k].items()))))
