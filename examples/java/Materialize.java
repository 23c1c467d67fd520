// A minimal Java microservice on pgcdc's topics: KafkaConsumer (read_committed) with
// Confluent's KafkaAvroDeserializer, GenericRecord values, nothing from pgcdc. It applies the
// change events of one table to an in-memory table by key, as a service keeping a local copy
// would:
//
//   op c, r, u   the row (`after`) is stored under the event's key
//   op d         the key's row is removed
//   tombstone    (null value) the key's row is removed (it already is, after its delete)
//   op t         the table is emptied (truncate events are sent with skipped_operations: [])
//
// When it has read <count> records it prints the table, one JSON object per row
// ({"key": …, "row": …}, Avro's JSON rendering of the records), and exits.
//
//   java -cp "<kafka-clients, kafka-avro-serializer and their jars>/*" Materialize.java \
//       127.0.0.1:9092 http://127.0.0.1:8081/apis/ccompat/v7 demo.public.customers 100
//
// or build it with examples/java/pom.xml (Confluent's Maven repository serves the serializer).

import io.confluent.kafka.serializers.KafkaAvroDeserializer;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;

public class Materialize {
    public static void main(String[] args) {
        if (args.length != 4) {
            System.err.println("usage: Materialize <bootstrap> <registry url> <topic> <count>");
            System.exit(2);
        }
        String bootstrap = args[0], registry = args[1], topic = args[2];
        long count = Long.parseLong(args[3]);

        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("group.id", "materialize-java-" + System.nanoTime());
        p.put("auto.offset.reset", "earliest");
        p.put("enable.auto.commit", "false");
        p.put("isolation.level", "read_committed");
        p.put("key.deserializer", KafkaAvroDeserializer.class.getName());
        p.put("value.deserializer", KafkaAvroDeserializer.class.getName());
        p.put("schema.registry.url", registry);

        // Keyed by the key record's JSON text; each entry holds the key and the row.
        Map<String, Object[]> table = new TreeMap<>();
        long seen = 0;
        long deadline = System.currentTimeMillis() + 120_000;
        try (KafkaConsumer<Object, Object> consumer = new KafkaConsumer<>(p)) {
            consumer.subscribe(List.of(topic));
            while (seen < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<Object, Object> r : consumer.poll(Duration.ofMillis(500))) {
                    apply(table, r.key(), (GenericRecord) r.value());
                    seen++;
                }
            }
        }
        if (seen < count) {
            System.err.println("read " + seen + " of " + count + " records within 120 s");
            System.exit(1);
        }
        for (Object[] kr : table.values()) {
            System.out.println("{\"key\": " + kr[0] + ", \"row\": " + kr[1] + "}");
        }
    }

    static void apply(Map<String, Object[]> table, Object key, GenericRecord value) {
        String k = String.valueOf(key);
        if (value == null) {
            table.remove(k);
            return;
        }
        switch (value.get("op").toString()) {
            case "c", "r", "u" -> table.put(k, new Object[] {key, value.get("after")});
            case "d" -> table.remove(k);
            case "t" -> table.clear();
            default -> { }
        }
    }
}
