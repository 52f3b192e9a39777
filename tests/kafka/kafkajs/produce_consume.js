// kafkajs against `keel serve`'s Kafka listener: the admin client creates a 3-partition topic,
// an idempotent producer sends keyed records with headers, a consumer in a group reads every one
// of them once (checking keys, values and headers) and commits; the group's committed offsets are
// each partition's end. Run by tests/kafka.rs with the listener's HOST:PORT; exits non-zero on
// any mismatch.
const { Kafka, logLevel } = require("kafkajs");

const [bootstrap] = process.argv.slice(2);
const topic = "kafkajs-topic";
const groupId = "kafkajs-group";
const records = 150;
const kafka = new Kafka({ clientId: "keel-kafkajs-test", brokers: [bootstrap], logLevel: logLevel.WARN });

function fail(message) {
  console.error(`kafkajs test failed: ${message}`);
  process.exit(1);
}

async function main() {
  const timer = setTimeout(() => fail("timed out after 60 s"), 60_000);
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < records; i++) {
    messages.push({ key: `k${i % 11}`, value: `v${i}`, headers: { seq: `${i}` } });
  }
  const sent = await producer.send({ topic, acks: -1, messages });
  if (sent.some((r) => r.errorCode !== 0)) fail(`produce errors ${JSON.stringify(sent)}`);
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId, sessionTimeout: 6000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Map();
  let done;
  const all = new Promise((resolve) => (done = resolve));
  await consumer.run({
    eachMessage: async ({ message }) => {
      const value = message.value.toString();
      const i = Number(value.slice(1));
      if (message.key.toString() !== `k${i % 11}`) fail(`key of ${value}: ${message.key}`);
      if (message.headers.seq.toString() !== `${i}`) fail(`header of ${value}`);
      seen.set(value, (seen.get(value) || 0) + 1);
      if (seen.size === records) done();
    },
  });
  await all;
  await consumer.stop(); // commits what was read
  await consumer.disconnect();
  for (const [value, n] of seen) if (n !== 1) fail(`${value} read ${n} times`);

  const committed = await admin.fetchOffsets({ groupId, topics: [topic] });
  const ends = await admin.fetchTopicOffsets(topic);
  for (const { partition, high } of ends) {
    const c = committed[0].partitions.find((p) => p.partition === partition);
    if (!c || c.offset !== high) fail(`partition ${partition}: committed ${c && c.offset}, end ${high}`);
  }
  await admin.disconnect();
  clearTimeout(timer);
  console.log(`kafkajs: ${records} records produced idempotently, read once by the group, commits at every end`);
}

main().catch((e) => fail(e.stack || e));
