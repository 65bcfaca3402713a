// The consumer side of a Debezium-format topic, built from maintained libraries only: Debezium's
// own serde (io.debezium.serde.DebeziumSerdes, what Kafka Streams and Quarkus consumers of
// Debezium use) and Kafka Connect's JsonConverter (what every Kafka Connect sink receives) parse
// every key and value. tests/kafka_sink.rs reads the agent's topic, writes the records to a file
// and compares what this prints with the source's changes.
//
//   java -cp '<debezium-libs>/*' DebeziumConsumer.java RECORDS_FILE TOPIC
//
// RECORDS_FILE: one record per line, `base64(key) base64(value)`, `-` for a null value (a
// tombstone). Prints one JSON line per record: {"key","tombstone","op","before","after","source"}:
// `key` and the envelope as Debezium's serde deserialized them, `after` from the serde configured
// with from.field=after (how a consumer reads the new row state); exits 1 if Kafka Connect's
// JsonConverter (schemas.enable=false) does not read a value as a map with `op`.
// (Kafka's Java client itself cannot be the reader here: the tests' broker is librdkafka's mock
// cluster, whose ApiVersions the 4.x Java client does not accept.)

import io.debezium.serde.DebeziumSerdes;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.*;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.json.JsonConverter;

public class DebeziumConsumer {
    public static void main(String[] args) {
        // Exceptions are printed here: the JDK 17 source launcher loses them (it fails trimming
        // their stack traces).
        try {
            run(args);
        } catch (Throwable e) {
            e.printStackTrace();
            System.exit(2);
        }
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    static void run(String[] args) throws Exception {
        Path file = Path.of(args[0]);
        String topic = args[1];
        // The key serde unwraps a one-column key to the column's value (Debezium's behaviour).
        Serde<Object> keys = DebeziumSerdes.payloadJson(Object.class);
        keys.configure(Map.of("unknown.properties.ignored", "true"), true);
        Serde<Map> envelopes = DebeziumSerdes.payloadJson(Map.class);
        envelopes.configure(Map.of("unknown.properties.ignored", "true"), false);
        Serde<Map> newState = DebeziumSerdes.payloadJson(Map.class);
        newState.configure(Map.of("from.field", "after", "unknown.properties.ignored", "true"), false);
        JsonConverter connect = new JsonConverter();
        connect.configure(Map.of("schemas.enable", "false", "converter.type", "value"));

        ObjectMapper json = new ObjectMapper();
        Base64.Decoder b64 = Base64.getDecoder();
        for (String line : Files.readAllLines(file)) {
            String[] parts = line.split(" ");
            byte[] key = b64.decode(parts[0]);
            byte[] value = parts[1].equals("-") ? null : b64.decode(parts[1]);
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("key", keys.deserializer().deserialize(topic, key));
            Map envelope = envelopes.deserializer().deserialize(topic, value);
            out.put("tombstone", envelope == null);
            if (envelope != null) {
                out.put("op", envelope.get("op"));
                out.put("before", envelope.get("before"));
                out.put("source", envelope.get("source"));
                out.put("after", newState.deserializer().deserialize(topic, value));
                SchemaAndValue record = connect.toConnectData(topic, value);
                if (!(record.value() instanceof Map) || !((Map) record.value()).containsKey("op")) {
                    System.err.println("Kafka Connect's JsonConverter read " + record);
                    System.exit(1);
                }
            }
            System.out.println(json.writeValueAsString(out));
        }
    }
}
