// Reads one or more pgcdc topics with Flink SQL's `debezium-avro-confluent` format (Kafka
// connector, bounded by the end offsets at start, read_committed) in a local MiniCluster, applies
// the changelog Flink produces (+I, -U, +U, -D) to a map by primary key, and prints the final rows
// as JSON lines sorted by key. Compiled and run by dev/flink/compat; see dev/flink/README.md.
//
//   java -cp ".stack/flink/libs/*:.stack/flink/classes" FlinkCompat \
//     --bootstrap 127.0.0.1:29092 --registry http://127.0.0.1:28081/apis/ccompat/v7 \
//     --topic compat.public.items --columns 'id INT, name STRING NOT NULL, seen BIGINT' --key id \
//     [--out items.flink.jsonl] [--topic ... --columns ... --key ... [--out ...]]...
//
// Options before the first --topic apply to every table:
//   --bootstrap HOST:PORT     (env KAFKA_BOOTSTRAP)
//   --registry URL            (env SCHEMA_REGISTRY_URL)
//   --option KEY=VALUE        an extra WITH option of the source table (repeatable)
//   --explain                 print each query's plan to stderr
//   --timeout-s N             give up on a table after N seconds (default 300)
//   --delete-topics T1,T2     instead of reading: delete these topics (Kafka AdminClient) and exit
// Each --topic starts a table: --columns is the Flink SQL column list (DDL, without the primary
// key clause), --key the comma-separated primary key columns, --out a file for its JSON lines
// (default: stdout). A single table may also come from env FLINK_TOPIC, FLINK_COLUMNS, FLINK_KEY.
// Exit codes: 0 ok, 1 a failed or timed-out job, 2 bad arguments.

import java.io.FileOutputStream;
import java.io.PrintStream;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.TableEnvironment;
import org.apache.flink.table.api.TableResult;
import org.apache.flink.table.catalog.Column;
import org.apache.flink.table.catalog.ResolvedSchema;
import org.apache.flink.types.Row;
import org.apache.flink.types.RowKind;
import org.apache.flink.util.CloseableIterator;

public final class FlinkCompat {

  static final class Spec {
    String topic;
    String columns;
    List<String> key = new ArrayList<>();
    String out;
  }

  public static void main(String[] args) throws Exception {
    String bootstrap = System.getenv("KAFKA_BOOTSTRAP");
    String registry = System.getenv("SCHEMA_REGISTRY_URL");
    Map<String, String> extra = new LinkedHashMap<>();
    boolean explain = false;
    long timeoutS = 300;
    List<Spec> specs = new ArrayList<>();
    List<String> deleteTopics = new ArrayList<>();
    Spec cur = null;
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (a.equals("--explain")) {
        explain = true;
        continue;
      }
      if (i + 1 >= args.length) usage("missing value after " + a);
      String v = args[++i];
      switch (a) {
        case "--bootstrap": bootstrap = v; break;
        case "--registry": registry = v; break;
        case "--timeout-s": timeoutS = Long.parseLong(v); break;
        case "--delete-topics": deleteTopics.addAll(splitKey(v)); break;
        case "--option": {
          int eq = v.indexOf('=');
          if (eq <= 0) usage("--option wants KEY=VALUE, got " + v);
          extra.put(v.substring(0, eq), v.substring(eq + 1));
          break;
        }
        case "--topic": cur = new Spec(); cur.topic = v; specs.add(cur); break;
        case "--columns": need(cur, a).columns = v; break;
        case "--key": need(cur, a).key = splitKey(v); break;
        case "--out": need(cur, a).out = v; break;
        default: usage("unknown option " + a);
      }
    }
    if (specs.isEmpty() && System.getenv("FLINK_TOPIC") != null) {
      Spec s = new Spec();
      s.topic = System.getenv("FLINK_TOPIC");
      s.columns = System.getenv("FLINK_COLUMNS");
      s.key = splitKey(System.getenv().getOrDefault("FLINK_KEY", ""));
      specs.add(s);
    }
    if (!deleteTopics.isEmpty()) {
      if (bootstrap == null) usage("--bootstrap is required");
      deleteTopics(bootstrap, deleteTopics);
      return;
    }
    if (bootstrap == null || registry == null) usage("--bootstrap and --registry are required");
    if (specs.isEmpty()) usage("no --topic");
    for (Spec s : specs) {
      if (s.columns == null || s.columns.isBlank()) usage("no --columns for " + s.topic);
      if (s.key.isEmpty()) usage("no --key for " + s.topic);
    }

    Map<String, String> settings = new LinkedHashMap<>();
    settings.put("parallelism.default", "1");
    settings.put("table.exec.resource.default-parallelism", "1");
    // Small, fixed memory for a 1 GiB heap on a 2-core machine.
    settings.put("taskmanager.memory.managed.size", "64m");
    settings.put("taskmanager.memory.network.min", "32m");
    settings.put("taskmanager.memory.network.max", "32m");
    Configuration conf = Configuration.fromMap(settings);
    TableEnvironment env =
        TableEnvironment.create(
            EnvironmentSettings.newInstance().inStreamingMode().withConfiguration(conf).build());

    int n = 0;
    for (Spec s : specs) {
      String table = "src" + (n++);
      StringBuilder ddl = new StringBuilder();
      ddl.append("CREATE TABLE ").append(table).append(" (\n  ").append(s.columns.trim())
          .append(",\n  PRIMARY KEY (").append(String.join(", ", quoteAll(s.key)))
          .append(") NOT ENFORCED\n) WITH (\n");
      Map<String, String> with = new LinkedHashMap<>();
      with.put("connector", "kafka");
      with.put("topic", s.topic);
      with.put("properties.bootstrap.servers", bootstrap);
      with.put("properties.isolation.level", "read_committed");
      with.put("scan.startup.mode", "earliest-offset");
      with.put("scan.bounded.mode", "latest-offset");
      with.put("format", "debezium-avro-confluent");
      with.put("debezium-avro-confluent.url", registry);
      with.putAll(extra);
      List<String> opts = new ArrayList<>();
      for (Map.Entry<String, String> e : with.entrySet()) {
        opts.add("  '" + sqlEscape(e.getKey()) + "' = '" + sqlEscape(e.getValue()) + "'");
      }
      ddl.append(String.join(",\n", opts)).append("\n)");
      System.err.println("[flink-compat] " + ddl);
      env.executeSql(ddl.toString());
      String query = "SELECT * FROM " + table;
      if (explain) System.err.println("[flink-compat] plan of " + s.topic + ":\n" + env.explainSql(query));

      long t0 = System.nanoTime();
      // Planning must happen on this thread: Calcite keeps its metadata handlers in a thread
      // local, and executeSql on another thread failed with
      // "NullPointerException: metadataHandlerProvider". Only the reading runs on a worker.
      TableResult result = env.executeSql(query);
      ResolvedSchema schema = result.getResolvedSchema();
      List<String> names = schema.getColumnNames();
      int[] keyIdx = new int[s.key.size()];
      for (int k = 0; k < keyIdx.length; k++) {
        keyIdx[k] = names.indexOf(s.key.get(k));
        if (keyIdx[k] < 0) usage("key column " + s.key.get(k) + " is not among " + names);
      }
      ExecutorService ex = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(r, "collect-" + s.topic);
        t.setDaemon(true);
        return t;
      });
      long[] counts = new long[RowKind.values().length];
      Future<TreeMap<List<Object>, Row>> fut = ex.submit(() -> {
        TreeMap<List<Object>, Row> state = new TreeMap<>(FlinkCompat::compareKeys);
        try (CloseableIterator<Row> it = result.collect()) {
          while (it.hasNext()) {
            Row row = it.next();
            List<Object> key = new ArrayList<>(keyIdx.length);
            for (int k : keyIdx) key.add(row.getField(k));
            RowKind kind = row.getKind();
            counts[kind.ordinal()]++;
            switch (kind) {
              case INSERT:
              case UPDATE_AFTER: {
                Row copy = Row.copy(row);
                copy.setKind(RowKind.INSERT);
                state.put(key, copy);
                break;
              }
              case UPDATE_BEFORE:
              case DELETE:
                state.remove(key);
                break;
              default:
                throw new IllegalStateException("row kind " + kind);
            }
          }
        }
        return state;
      });
      TreeMap<List<Object>, Row> state;
      try {
        state = fut.get(timeoutS, TimeUnit.SECONDS);
      } catch (TimeoutException te) {
        System.err.println("[flink-compat] error: " + s.topic + ": no end of input within " + timeoutS + " s");
        result.getJobClient().ifPresent(c -> c.cancel());
        System.exit(1);
        return;
      } catch (java.util.concurrent.ExecutionException ee) {
        System.err.println("[flink-compat] error: " + s.topic + ": the job failed:");
        ee.getCause().printStackTrace();
        System.err.println("[flink-compat] root cause: " + rootCause(ee.getCause()));
        System.exit(1);
        return;
      } finally {
        ex.shutdownNow();
      }
      PrintStream out =
          s.out == null
              ? System.out
              : new PrintStream(new FileOutputStream(s.out), false, StandardCharsets.UTF_8);
      for (Row r : state.values()) out.println(toJson(names, r));
      out.flush();
      if (s.out != null) out.close();
      System.err.printf(
          "[flink-compat] topic=%s rows=%d changelog: +I=%d -U=%d +U=%d -D=%d (%.1f s)%n",
          s.topic, state.size(), counts[RowKind.INSERT.ordinal()],
          counts[RowKind.UPDATE_BEFORE.ordinal()], counts[RowKind.UPDATE_AFTER.ordinal()],
          counts[RowKind.DELETE.ordinal()], (System.nanoTime() - t0) / 1e9);
    }
    // The MiniCluster's threads are not all daemons: leave at once.
    System.out.flush();
    System.exit(0);
  }

  // Removes what a compat run created in Kafka; topics that do not exist are not an error.
  static void deleteTopics(String bootstrap, List<String> topics) throws Exception {
    Map<String, Object> props = new LinkedHashMap<>();
    props.put("bootstrap.servers", bootstrap);
    props.put("request.timeout.ms", 15000);
    props.put("default.api.timeout.ms", 30000);
    try (org.apache.kafka.clients.admin.Admin admin = org.apache.kafka.clients.admin.Admin.create(props)) {
      java.util.Set<String> existing = admin.listTopics().names().get(30, TimeUnit.SECONDS);
      List<String> gone = new ArrayList<>();
      for (String t : topics) if (existing.contains(t)) gone.add(t);
      if (!gone.isEmpty()) admin.deleteTopics(gone).all().get(30, TimeUnit.SECONDS);
      System.err.println("[flink-compat] deleted topics: " + (gone.isEmpty() ? "(none)" : String.join(" ", gone)));
    }
  }

  static Spec need(Spec s, String opt) {
    if (s == null) usage(opt + " comes after --topic");
    return s;
  }

  static List<String> splitKey(String v) {
    List<String> k = new ArrayList<>();
    for (String p : v.split(",")) if (!p.isBlank()) k.add(p.trim());
    return k;
  }

  static List<String> quoteAll(List<String> names) {
    List<String> q = new ArrayList<>();
    for (String n : names) q.add("`" + n.replace("`", "``") + "`");
    return q;
  }

  static String sqlEscape(String s) {
    return s.replace("'", "''");
  }

  static void usage(String msg) {
    System.err.println("[flink-compat] error: " + msg);
    System.err.println(
        "usage: FlinkCompat --bootstrap H:P --registry URL [--option K=V]... [--explain]"
            + " --topic T --columns 'DDL' --key k1,k2 [--out FILE] [--topic ...]...");
    System.exit(2);
  }

  static String rootCause(Throwable t) {
    while (t.getCause() != null && t.getCause() != t) t = t.getCause();
    return t.getClass().getName() + ": " + t.getMessage();
  }

  @SuppressWarnings({"unchecked", "rawtypes"})
  static int compareKeys(List<Object> a, List<Object> b) {
    for (int i = 0; i < a.size(); i++) {
      Object x = a.get(i), y = b.get(i);
      if (x == null || y == null) {
        if (x != y) return x == null ? -1 : 1;
        continue;
      }
      int c;
      if (x instanceof byte[]) c = Arrays.compareUnsigned((byte[]) x, (byte[]) y);
      else if (x instanceof Comparable) c = ((Comparable) x).compareTo(y);
      else c = x.toString().compareTo(y.toString());
      if (c != 0) return c;
    }
    return 0;
  }

  // JSON with one member per column, in DDL order. Numbers (integers, floats) are JSON numbers;
  // DECIMAL is a string in plain notation (no exponent, scale kept); BYTES is lowercase hex;
  // temporal types are their java.time ISO string; everything else is its string form.
  static String toJson(List<String> names, Row r) {
    StringBuilder b = new StringBuilder("{");
    for (int i = 0; i < names.size(); i++) {
      if (i > 0) b.append(',');
      str(b, names.get(i));
      b.append(':');
      Object v = r.getField(i);
      if (v == null) b.append("null");
      else if (v instanceof Boolean || v instanceof Integer || v instanceof Long
          || v instanceof Short || v instanceof Byte) b.append(v);
      else if (v instanceof Double || v instanceof Float) {
        double d = ((Number) v).doubleValue();
        if (Double.isFinite(d)) b.append(v);
        else str(b, v.toString());
      } else if (v instanceof BigDecimal) str(b, ((BigDecimal) v).toPlainString());
      else if (v instanceof byte[]) {
        StringBuilder h = new StringBuilder();
        for (byte x : (byte[]) v) h.append(String.format("%02x", x & 0xff));
        str(b, h.toString());
      } else str(b, v.toString());
    }
    return b.append('}').toString();
  }

  static void str(StringBuilder b, String s) {
    b.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"': b.append("\\\""); break;
        case '\\': b.append("\\\\"); break;
        case '\n': b.append("\\n"); break;
        case '\r': b.append("\\r"); break;
        case '\t': b.append("\\t"); break;
        default:
          if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
          else b.append(c);
      }
    }
    b.append('"');
  }
}
