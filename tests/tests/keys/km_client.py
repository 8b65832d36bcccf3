"""A keymanager client written from docs/keymanager.md alone (hashlib, hmac, the
`cryptography` package, paho-mqtt): asks for one key and prints one JSON line,
{"ok": true, "value": <text>} or {"ok": false, "error": <code>}, plus the known-answer check.

Usage: km_client.py HOST PORT CLIENT PASSWORD MACHINE_ID KEY [known-answer]
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305


def client_secret(password, client, machine_id):
    msg = ("iotctl-km-v1|" + client + "|" + machine_id).encode()
    return hmac.new(password.encode(), msg, hashlib.sha256).digest()


def request_mac(s, client, key, ts, nonce):
    msg = ("v1\n" + client + "\n" + key + "\n" + str(ts) + "\n" + nonce).encode()
    return hmac.new(s, msg, hashlib.sha256).hexdigest()


def open_reply(s, client, key, nonce, iv_hex, value_b64):
    k = hmac.new(s, b"reply", hashlib.sha256).digest()
    aad = ("v1\n" + client + "\n" + key + "\n" + nonce).encode()
    return ChaCha20Poly1305(k).decrypt(bytes.fromhex(iv_hex), base64.b64decode(value_b64), aad)


def seal_reply(s, client, key, nonce, iv, plain):
    k = hmac.new(s, b"reply", hashlib.sha256).digest()
    aad = ("v1\n" + client + "\n" + key + "\n" + nonce).encode()
    return iv.hex(), base64.b64encode(ChaCha20Poly1305(k).encrypt(iv, plain, aad)).decode()


def known_answer():
    """The vector of the document's "Known answer" section, computed here."""
    s = client_secret("correct horse", "backup", "0123456789abcdef0123456789abcdef")
    mac = request_mac(s, "backup", "db-password", 1796290000, "00112233445566778899aabbccddeeff")
    iv, value = seal_reply(s, "backup", "db-password", "00112233445566778899aabbccddeeff",
                           bytes(range(12)), b"s3cret value")
    return {"s": s.hex(), "mac": mac, "iv": iv, "value": value}


def ask(host, port, client, password, machine_id, key):
    s = client_secret(password, client, machine_id)
    ts = int(time.time())
    nonce = os.urandom(16).hex()
    req = {"key": key, "ts": ts, "nonce": nonce, "mac": request_mac(s, client, key, ts, nonce)}
    got = {}
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_c, _u, msg):
        reply = json.loads(msg.payload)
        if reply.get("nonce") == nonce:
            got.update(reply)
            done.set()

    c = mqtt.Client(client_id="km-py-" + os.urandom(4).hex())
    c.on_message = on_message
    c.on_subscribe = lambda *_a: subscribed.set()
    c.connect(host, int(port))
    c.loop_start()
    c.subscribe("iottalk/km/res/" + client, qos=1)
    if not subscribed.wait(30):
        return {"ok": False, "error": "no SUBACK"}
    c.publish("iottalk/km/req/" + client, json.dumps(req), qos=1)
    if not done.wait(30):
        return {"ok": False, "error": "no reply"}
    c.loop_stop()
    c.disconnect()
    if not got.get("ok"):
        return {"ok": False, "error": got.get("error")}
    value = open_reply(s, client, key, nonce, got["iv"], got["value"])
    return {"ok": True, "value": value.decode()}


if __name__ == "__main__":
    if sys.argv[1:] == ["known-answer"]:
        print(json.dumps(known_answer()))
    else:
        print(json.dumps(ask(*sys.argv[1:7])))
