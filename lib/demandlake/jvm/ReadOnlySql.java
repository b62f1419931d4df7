package io.demandlake.sql;

import java.util.Set;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.expressions.CallMethodViaReflection;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;

import scala.Function1;
import scala.runtime.BoxedUnit;

/**
 * A Spark analyzer check rule that makes SQL sessions read-only (the SQL endpoint's analyst
 * sessions, demandlake.sql_endpoint).
 *
 * <p>Check rules run on every analyzed plan before anything executes (commands run eagerly only
 * after analysis), so a refused statement changes nothing. The rule allows queries and an
 * allow-list of commands that only read (SHOW ..., DESCRIBE ..., EXPLAIN, SET, RESET, USE); every
 * other command (INSERT, UPDATE, DELETE, MERGE, CREATE, DROP, ALTER, TRUNCATE, CACHE, REFRESH,
 * ANALYZE, ADD JAR, VACUUM, OPTIMIZE, RESTORE, ... whatever syntax or catalog it came from) is
 * refused, as is any call of Java methods through reflect / java_method / try_reflect.
 *
 * <p>{@link #install} adds the rule to a running application's extensions: sessions created
 * afterwards (the Thrift server opens one per connection) are read-only once {@link #enable} has
 * been called; sessions that already existed (the one that registered the tables) are not.
 */
public final class ReadOnlySql {
    private static volatile boolean enabled = false;
    private static volatile boolean installed = false;

    private static final Set<String> READ_COMMANDS = Set.of(
        "ExplainCommand", "SetCommand", "ResetCommand", "SetCatalogAndNamespace",
        "SetCatalogCommand", "SetNamespaceCommand");

    private ReadOnlySql() {}

    /** Add the check rule to the application's session extensions (once). */
    public static synchronized void install(org.apache.spark.sql.classic.SparkSession session) {
        if (installed) {
            return;
        }
        Function1<SparkSession, Function1<LogicalPlan, BoxedUnit>> builder = ReadOnlySql::ruleFor;
        session.extensions().injectCheckRule(builder);
        installed = true;
    }

    /** Make every session created from now on read-only. */
    public static void enable() {
        enabled = true;
    }

    /** Tests only: sessions created from now on may write again (reflect cannot reach this). */
    public static void disableForTests() {
        enabled = false;
    }

    public static boolean isEnabled() {
        return enabled;
    }

    private static Function1<LogicalPlan, BoxedUnit> ruleFor(SparkSession session) {
        final boolean readOnly = enabled;  // fixed when the session is built
        return plan -> {
            if (readOnly) {
                check(plan);
            }
            return BoxedUnit.UNIT;
        };
    }

    /** Whether a command only reads: SHOW ..., DESCRIBE ..., EXPLAIN, SET, RESET, USE. */
    static boolean readsOnly(LogicalPlan node) {
        String name = node.getClass().getSimpleName();
        return name.startsWith("Show") || name.startsWith("Describe") || READ_COMMANDS.contains(name);
    }

    static void check(LogicalPlan plan) {
        plan.foreachWithSubqueries(node -> {
            if (node instanceof Command && !readsOnly(node)) {
                throw refused(node.nodeName());
            }
            node.expressions().foreach(e -> {
                if (e.exists(x -> x instanceof CallMethodViaReflection)) {
                    throw refused("reflect / java_method");
                }
                return BoxedUnit.UNIT;
            });
            return BoxedUnit.UNIT;
        });
    }

    private static UnsupportedOperationException refused(String what) {
        return new UnsupportedOperationException(
            "demandlake SQL endpoint is read-only: " + what + " refused (only SELECT, WITH, SHOW, "
            + "DESCRIBE, EXPLAIN, SET and USE run here; tables are written by the pipeline)");
    }
}
