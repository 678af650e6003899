// One JVM that serves Flyway commands for many databases at once.
//
// A JVM start plus Flyway's class loading costs about a second; the seed paid it three times per
// database. This engine pays it once per run: it reads one JSON request per line on stdin, runs
// each on its own thread through Flyway's public Java API, and answers one JSON line per request on
// stdout with Flyway's own result object (the same objects the command line prints with
// -outputType=json). Flyway's log lines are forwarded as events tagged with the request id, so the
// caller can show them under the right database.
//
// Credentials never travel over the pipe: a request names a target, and the engine reads
// AMEIDE_TARGET_<TARGET>_URL, _USER and _PASSWORD from its own environment.
package ameide;

import com.fasterxml.jackson.annotation.JsonAutoDetect;
import com.fasterxml.jackson.annotation.PropertyAccessor;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogManager;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import org.flywaydb.core.Flyway;
import org.flywaydb.core.api.FlywayException;
import org.flywaydb.core.api.configuration.FluentConfiguration;

public final class FlywayEngine {
    private static final ObjectMapper JSON = new ObjectMapper()
            .setVisibility(PropertyAccessor.ALL, JsonAutoDetect.Visibility.NONE)
            .setVisibility(PropertyAccessor.FIELD, JsonAutoDetect.Visibility.PUBLIC_ONLY)
            .disable(SerializationFeature.FAIL_ON_EMPTY_BEANS);
    private static final ThreadLocal<Long> REQUEST = new ThreadLocal<>();
    private static PrintStream protocol;

    public static void main(String[] args) throws Exception {
        // Only protocol lines may reach stdout; anything a library prints goes to stderr.
        protocol = new PrintStream(System.out, false, StandardCharsets.UTF_8);
        System.setOut(System.err);
        // With no logging library on the class path Flyway logs through java.util.logging.
        LogManager.getLogManager().reset();
        Logger root = Logger.getLogger("");
        root.setLevel(Level.INFO);
        root.addHandler(new ForwardingHandler());

        ExecutorService pool = Executors.newCachedThreadPool();
        emit(JSON.createObjectNode().put("event", "ready"));
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isBlank()) {
                continue;
            }
            JsonNode request = JSON.readTree(line);
            pool.submit(() -> serve(request));
        }
        pool.shutdown();
        pool.awaitTermination(1, TimeUnit.DAYS);
    }

    private static void serve(JsonNode request) {
        long id = request.path("id").asLong();
        REQUEST.set(id);
        ObjectNode answer = JSON.createObjectNode().put("id", id);
        try {
            Flyway flyway = configure(request).load();
            Object result = switch (request.path("command").asText()) {
                case "validate" -> flyway.validateWithResult();
                case "migrate" -> flyway.migrate();
                case "info" -> flyway.info().getInfoResult();
                case "repair" -> flyway.repair();
                default -> throw new IllegalArgumentException(
                        "unknown command " + request.path("command").asText());
            };
            answer.put("ok", true).set("result", JSON.valueToTree(result));
        } catch (Exception e) {
            answer.put("ok", false).set("error", describe(e));
        } finally {
            REQUEST.remove();
        }
        emit(answer);
    }

    private static FluentConfiguration configure(JsonNode request) {
        String target = request.path("target").asText();
        String prefix = "AMEIDE_TARGET_" + target + "_";
        String url = System.getenv(prefix + "URL");
        if (url == null) {
            throw new IllegalArgumentException("no connection for target " + target
                    + ": the engine's environment lacks " + prefix + "URL");
        }
        Map<String, String> placeholders = new HashMap<>();
        Iterator<Map.Entry<String, JsonNode>> fields = request.path("placeholders").fields();
        while (fields.hasNext()) {
            Map.Entry<String, JsonNode> field = fields.next();
            placeholders.put(field.getKey(), field.getValue().asText());
        }
        FluentConfiguration config = Flyway.configure()
                .dataSource(url, System.getenv(prefix + "USER"), System.getenv(prefix + "PASSWORD"))
                .locations(strings(request.path("locations")))
                .placeholders(placeholders)
                .table(request.path("table").asText("flyway_schema_history"))
                .connectRetries(0)
                .cleanDisabled(true);
        if (request.has("ignoreMigrationPatterns")) {
            config.ignoreMigrationPatterns(strings(request.path("ignoreMigrationPatterns")));
        }
        if (request.has("lockRetryCount")) {
            config.lockRetryCount(request.path("lockRetryCount").asInt());
        }
        return config;
    }

    private static String[] strings(JsonNode array) {
        List<String> values = new ArrayList<>();
        array.forEach(node -> values.add(node.asText()));
        return values.toArray(new String[0]);
    }

    private static ObjectNode describe(Exception e) {
        ObjectNode error = JSON.createObjectNode()
                .put("class", e.getClass().getName())
                .put("message", String.valueOf(e.getMessage()));
        if (e instanceof FlywayException fe && fe.getErrorCode() != null) {
            error.put("errorCode", fe.getErrorCode().toString());
        }
        ArrayNode states = error.putArray("sqlStates");
        ArrayNode causes = error.putArray("causes");
        for (Throwable t = e.getCause(); t != null && t != t.getCause(); t = t.getCause()) {
            causes.add(t.getClass().getName() + ": " + t.getMessage());
            if (t instanceof SQLException sql && sql.getSQLState() != null) {
                states.add(sql.getSQLState());
            }
        }
        // Flyway's migrate failure carries the partial result (what was applied before the error).
        try {
            Method partial = e.getClass().getMethod("getErrorResult");
            error.set("result", JSON.valueToTree(partial.invoke(e)));
        } catch (ReflectiveOperationException | IllegalArgumentException absent) {
            // Not a migrate failure: there is no partial result to report.
        }
        return error;
    }

    private static void emit(ObjectNode message) {
        String line;
        try {
            line = JSON.writeValueAsString(message);
        } catch (Exception e) {
            line = "{\"id\":" + message.path("id").asLong() + ",\"ok\":false,\"error\":{\"class\":\"serialization\",\"message\":"
                    + JSON.getNodeFactory().textNode(String.valueOf(e.getMessage())) + "}}";
        }
        synchronized (FlywayEngine.class) {
            protocol.println(line);
            protocol.flush();
        }
    }

    private static final class ForwardingHandler extends Handler {
        @Override
        public void publish(LogRecord record) {
            if (!isLoggable(record)) {
                return;
            }
            String level = record.getLevel().intValue() >= Level.SEVERE.intValue() ? "error"
                    : record.getLevel().intValue() >= Level.WARNING.intValue() ? "warning" : "info";
            ObjectNode event = JSON.createObjectNode()
                    .put("event", "log")
                    .put("level", level)
                    .put("message", record.getMessage());
            Long id = REQUEST.get();
            if (id != null) {
                event.put("id", id);
            }
            emit(event);
        }

        @Override
        public void flush() {}

        @Override
        public void close() {}
    }
}
