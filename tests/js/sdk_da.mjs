// What the IoTtalk JavaScript SDK (iottalk-js 2.3.x, src/dan2.js) does on the wire, replayed
// with the MQTT.js it bundles: register with PUT, connect over WebSocket with the reply's
// username and password (empty strings when the reply has none), a retained will, keepalive
// 30; subscribe to the control channel at QoS 2, publish `online` retained at QoS 2; answer
// each control signal with its msg_id. The SDK itself is a browser bundle on GitHub only
// (not on npm), so the tests replay its calls (tests/tests/js_sdk.rs).
//
// Usage: node sdk_da.mjs <csm url> <device id>. Prints `connected`, then `signal <command>`
// for each signal; ends on stdin's end.
import mqtt from 'mqtt';

const [url, id] = process.argv.slice(2);
const body = {
  name: 'js-da',
  idf_list: [['Dummy_Sensor', ['dB']]],
  odf_list: [['Dummy_Control', [null]]],
  accept_protos: 'mqtt',
  profile: { model: 'Dummy_Device' },
};
const res = await fetch(`${url}/${id}`, {
  method: 'PUT',
  headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
  body: JSON.stringify(body),
});
if (!res.ok) {
  console.error('register failed', res.status, await res.text());
  process.exit(1);
}
const metadata = await res.json();
const ctrlI = metadata.ctrl_chans[0];
const ctrlO = metadata.ctrl_chans[1];
const client = mqtt.connect(`${metadata.url.ws_scheme}://${metadata.url.host}:${metadata.url.ws_port}`, {
  clientId: `iottalk-js-${id}`,
  username: metadata.username ? metadata.username : '',
  password: metadata.password ? metadata.password : '',
  will: {
    topic: ctrlI,
    payload: JSON.stringify({ state: 'offline', rev: metadata.rev }),
    retain: true,
  },
  keepalive: 30,
  reconnectPeriod: 0,
});
client.on('connect', () => {
  client.subscribe(ctrlO, { qos: 2 }, (err) => {
    if (err) {
      console.error('subscribe failed', err);
      process.exit(1);
    }
    client.publish(ctrlI, JSON.stringify({ state: 'online', rev: metadata.rev }), { retain: true, qos: 2 }, () => {
      console.log('connected');
    });
  });
});
client.on('message', (topic, message) => {
  if (topic !== ctrlO) return;
  const signal = JSON.parse(message.toString());
  console.log(`signal ${signal.command}`);
  client.publish(ctrlI, JSON.stringify({ msg_id: signal.msg_id, state: 'ok' }), { qos: 2 });
});
client.on('error', (e) => {
  console.error('mqtt error', e.message);
  process.exit(1);
});
client.on('close', () => console.log('closed'));
process.stdin.resume();
process.stdin.on('end', () => client.end(false, () => process.exit(0)));
