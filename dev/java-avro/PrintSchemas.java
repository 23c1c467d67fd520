// Reads one Avro schema (JSON) per line on stdin and prints each as Java's Avro prints it
// (Schema.toString()), one per line: the text Confluent's AvroConverter sends to the
// registry when it looks a writer schema up (POST /subjects/{subject}).
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import org.apache.avro.Schema;

public class PrintSchemas {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) continue;
            System.out.println(new Schema.Parser().parse(line).toString());
        }
    }
}
