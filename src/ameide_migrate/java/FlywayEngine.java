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
//
// JSON goes through Gson, which the installer adds to the class path itself: Flyway's own JSON
// library changed between releases (Gson, then Jackson 2, then Jackson 3), and the engine must
// keep working with newer Flyway releases.
package ameide;

import com.google.gson.FieldAttributes;
import com.google.gson.ExclusionStrategy;
import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.charset.StandardCharsets;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.HashMap;
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
    // Flyway's result objects expose their data as public fields, as its command line prints them.
    private static final Gson JSON = new GsonBuilder()
            .serializeNulls()
            .setExclusionStrategies(new ExclusionStrategy() {
                @Override
                public boolean shouldSkipField(FieldAttributes field) {
                    return !field.hasModifier(Modifier.PUBLIC) || field.hasModifier(Modifier.STATIC);
                }

                @Override
                public boolean shouldSkipClass(Class<?> clazz) {
                    return Throwable.class.isAssignableFrom(clazz);
                }
            })
            .create();
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
        JsonObject ready = new JsonObject();
        ready.addProperty("event", "ready");
        emit(ready);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isBlank()) {
                continue;
            }
            JsonObject request = JsonParser.parseString(line).getAsJsonObject();
            pool.submit(() -> serve(request));
        }
        pool.shutdown();
        pool.awaitTermination(1, TimeUnit.DAYS);
    }

    private static String text(JsonObject object, String key, String fallback) {
        JsonElement value = object.get(key);
        return value == null || value.isJsonNull() ? fallback : value.getAsString();
    }

    private static void serve(JsonObject request) {
        long id = request.get("id").getAsLong();
        REQUEST.set(id);
        JsonObject answer = new JsonObject();
        answer.addProperty("id", id);
        try {
            Flyway flyway = configure(request).load();
            String command = text(request, "command", "");
            Object result = switch (command) {
                case "validate" -> flyway.validateWithResult();
                case "migrate" -> flyway.migrate();
                case "info" -> flyway.info().getInfoResult();
                case "repair" -> flyway.repair();
                case "baseline" -> flyway.baseline();
                default -> throw new IllegalArgumentException("unknown command " + command);
            };
            answer.addProperty("ok", true);
            answer.add("result", JSON.toJsonTree(result));
        } catch (Throwable e) {
            // Whatever happens (a LinkageError from a Flyway release that lacks something the
            // engine uses, a StackOverflowError), the caller gets an answer, never silence.
            answer = failure(id, e);
        } finally {
            REQUEST.remove();
        }
        emit(answer);
    }

    private static FluentConfiguration configure(JsonObject request) {
        String target = text(request, "target", "");
        String prefix = "AMEIDE_TARGET_" + target + "_";
        String url = System.getenv(prefix + "URL");
        if (url == null) {
            throw new IllegalArgumentException("no connection for target " + target
                    + ": the engine's environment lacks " + prefix + "URL");
        }
        Map<String, String> placeholders = new HashMap<>();
        if (request.has("placeholders")) {
            for (Map.Entry<String, JsonElement> field : request.getAsJsonObject("placeholders").entrySet()) {
                placeholders.put(field.getKey(), field.getValue().getAsString());
            }
        }
        FluentConfiguration config = Flyway.configure()
                .dataSource(url, System.getenv(prefix + "USER"), System.getenv(prefix + "PASSWORD"))
                .locations(strings(request.getAsJsonArray("locations")))
                .placeholders(placeholders)
                .table(text(request, "table", "flyway_schema_history"))
                .connectRetries(0)
                .cleanDisabled(true)
                // A CREATE INDEX CONCURRENTLY waits for every transaction older than it, and with
                // Flyway 10's default lock (pg_advisory_xact_lock on a second connection left
                // "idle in transaction") that includes Flyway's own: it waits forever. A session
                // lock serializes concurrent runs as well and holds no transaction open.
                .configuration(Map.of("flyway.postgresql.transactional.lock",
                        text(request, "postgresqlTransactionalLock", "false")));
        if (request.has("configuration")) {
            // The database's flyway.toml / flyway.conf / FLYWAY_* settings, read by Flyway's own
            // loader: it parses each value and refuses a key it does not know.
            Map<String, String> settings = new HashMap<>();
            for (Map.Entry<String, JsonElement> field : request.getAsJsonObject("configuration").entrySet()) {
                settings.put(field.getKey(), field.getValue().getAsString());
            }
            config.configuration(settings);
        }
        if (request.has("ignoreMigrationPatterns")) {
            config.ignoreMigrationPatterns(strings(request.getAsJsonArray("ignoreMigrationPatterns")));
        }
        if (request.has("lockRetryCount")) {
            config.lockRetryCount(request.get("lockRetryCount").getAsInt());
        }
        return config;
    }

    private static String[] strings(JsonArray array) {
        List<String> values = new ArrayList<>();
        array.forEach(element -> values.add(element.getAsString()));
        return values.toArray(new String[0]);
    }

    private static JsonObject failure(long id, Throwable e) {
        JsonObject answer = new JsonObject();
        answer.addProperty("id", id);
        answer.addProperty("ok", false);
        try {
            answer.add("error", describe(e));
        } catch (RuntimeException | LinkageError unserializable) {
            JsonObject error = new JsonObject();
            error.addProperty("class", e.getClass().getName());
            error.addProperty("message", String.valueOf(e.getMessage()));
            error.add("sqlStates", new JsonArray());
            error.add("causes", new JsonArray());
            answer.add("error", error);
        }
        return answer;
    }

    private static JsonObject describe(Throwable e) {
        JsonObject error = new JsonObject();
        error.addProperty("class", e.getClass().getName());
        error.addProperty("message", String.valueOf(e.getMessage()));
        if (e instanceof FlywayException fe && fe.getErrorCode() != null) {
            error.addProperty("errorCode", fe.getErrorCode().toString());
        }
        JsonArray states = new JsonArray();
        JsonArray causes = new JsonArray();
        error.add("sqlStates", states);
        error.add("causes", causes);
        for (Throwable t = e.getCause(); t != null && t != t.getCause(); t = t.getCause()) {
            causes.add(t.getClass().getName() + ": " + t.getMessage());
            if (t instanceof SQLException sql && sql.getSQLState() != null) {
                states.add(sql.getSQLState());
            }
        }
        // The migration that failed, and whether Flyway ran it outside a transaction: then what
        // it did before failing stays, and a retry would meet its leftovers.
        try {
            Object migration = e.getClass().getMethod("getMigration").invoke(e);
            if (migration instanceof org.flywaydb.core.api.MigrationInfo info) {
                error.addProperty("script", info.getScript());
            }
            error.addProperty("executableInTransaction",
                    (Boolean) e.getClass().getMethod("isExecutableInTransaction").invoke(e));
        } catch (ReflectiveOperationException | ClassCastException absent) {
            // Not a migration's failure (a lock timeout, a connection refused).
        }
        // Flyway's migrate failure carries the partial result (what was applied before the error).
        try {
            Method partial = e.getClass().getMethod("getErrorResult");
            error.add("result", JSON.toJsonTree(partial.invoke(e)));
        } catch (ReflectiveOperationException | IllegalArgumentException absent) {
            // Not a migrate failure: there is no partial result to report.
        }
        return error;
    }

    private static void emit(JsonObject message) {
        String line = JSON.toJson(message);
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
            JsonObject event = new JsonObject();
            event.addProperty("event", "log");
            event.addProperty("level", level);
            event.addProperty("message", record.getMessage());
            Long id = REQUEST.get();
            if (id != null) {
                event.addProperty("id", id);
            }
            emit(event);
        }

        @Override
        public void flush() {}

        @Override
        public void close() {}
    }
}
