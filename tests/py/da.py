"""Drive one unmodified iottalk-py (dan.Client) device application from a test.

Usage: da.py API_URL ID NAME IDF_LIST_JSON ODF_LIST_JSON [MODEL]

MODEL is the device model the DA registers as (profile `model`, default Dummy_Device).

Prints one JSON object per line on stdout for each event:
  {"event": "registered", "rev": ..., "name": ...}
  {"event": "signal", "command": "CONNECT", "df": "Dummy_Sensor"}
  {"event": "data", "df": "Dummy_Control", "data": [1]}
  {"event": "pushed", "ok": true}
  {"event": "deregistered"}
  {"event": "error", "reason": ...}
Reads commands on stdin, one per line:
  push IDF JSON      push a value (iottalk-py wraps scalars into a list)
  deregister         offline + DELETE, as the SDK does on Ctrl-C
  exit               leave without deregistering (the will fires when the socket closes)
"""
import json
import logging
import os
import queue
import sys
import time

from iottalkpy.dan import Client
from iottalkpy.exceptions import RegistrationError
from iottalkpy import dan
from paho.mqtt import client as paho_client

# Opt-in MQTT over TLS for the TLS tests: iottalk-py 2.3.1 ignores the scheme of the
# registration reply (`url.scheme` "mqtts") and never calls paho's tls_set, so it speaks
# plain MQTT to whatever port it is told. With IOTTALK_TEST_MQTT_CAFILE set, every paho
# client it makes calls tls_set with that CA. The SDK itself stays unmodified.
MQTT_CAFILE = os.environ.get("IOTTALK_TEST_MQTT_CAFILE")
if MQTT_CAFILE:
    _PlainClient = paho_client.Client

    class TlsClient(_PlainClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.tls_set(ca_certs=MQTT_CAFILE)

    paho_client.Client = TlsClient

# The SDK hands paho its logger: at debug level every MQTT packet goes to stderr, which the
# test prints when it fails.
dan.log.setLevel(logging.DEBUG)

# register() waits at most 5 s for the broker's CONNACK (``ctx._mqueue.get(timeout=5)``), a
# time limit a loaded machine can exceed. The SDK stays unmodified; its context gets a queue
# that waits longer (the test has its own deadline).
REGISTER_WAIT_S = 60


class PatientQueue(queue.Queue):
    def get(self, block=True, timeout=None):
        if timeout is not None:
            timeout = max(timeout, REGISTER_WAIT_S)
        return super().get(block, timeout)


def quiesce(mqtt_client, timeout_s=30):
    """Waits until paho has no publish of ours in flight.

    iottalk-py's deregister() makes the next on_publish disconnect, meant for its own offline
    message; a QoS 2 publish still in flight (a reply to CONNECT, say) whose PUBCOMP arrives
    after deregister() started disconnects before the offline message is delivered, and
    deregister() then waits for ever. On a loaded machine that PUBCOMP can be late. The SDK
    stays unmodified: the test waits for quiet before asking it to deregister.
    """
    deadline = time.time() + timeout_s
    while len(getattr(mqtt_client, "_out_messages", ())) > 0 and time.time() < deadline:
        time.sleep(0.01)


def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def main():
    api_url, id_, name, idf_list, odf_list = sys.argv[1:6]
    model = sys.argv[6] if len(sys.argv) > 6 else "Dummy_Device"
    client = Client()
    client.context._mqueue = PatientQueue()

    def on_signal(command, df_list):
        for df in df_list:
            emit(event="signal", command=command, df=df)
        return True

    def on_data(df, data):
        emit(event="data", df=df, data=data)

    try:
        ctx = client.register(
            api_url,
            on_signal=on_signal,
            on_data=on_data,
            id_=id_,
            name=name or None,
            idf_list=json.loads(idf_list),
            odf_list=json.loads(odf_list),
            profile={"model": model, "u_name": None},
        )
    except (RegistrationError, Exception) as e:  # noqa: BLE001 - report anything to the test
        emit(event="error", reason=str(e))
        return 1
    # paho's reconnect delay doubles up to 120 s while the broker is away: after a slow
    # controller restart the DA could come back long after the test's deadline.
    ctx.mqtt_client.reconnect_delay_set(min_delay=1, max_delay=1)
    emit(event="registered", rev=ctx.rev, name=ctx.name)

    for line in sys.stdin:
        words = line.strip().split(" ", 2)
        if words[0] == "push":
            ok = client.push(words[1], json.loads(words[2]), block=True)
            emit(event="pushed", ok=ok)
        elif words[0] == "deregister":
            try:
                quiesce(ctx.mqtt_client)
                client.deregister()
                emit(event="deregistered")
            except Exception as e:  # noqa: BLE001
                emit(event="error", reason=str(e))
            return 0
        elif words[0] == "exit":
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
