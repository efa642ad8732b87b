// pgjdbc through pgtenant: server-side prepared statements (prepareThreshold=1),
// statement metadata (a Describe of a statement prepared earlier), batches and
// transactions. Usage: java -cp postgresql.jar JdbcCheck.java <jdbc url> <user> <password> <expected ids>
import java.sql.*;
import java.util.*;

public class JdbcCheck {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("prepareThreshold", "1");
        String expected = args[3];
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            PreparedStatement ids = conn.prepareStatement("SELECT id FROM accounts WHERE id = ANY(?) ORDER BY id");
            for (int round = 0; round < 20; round++) {
                ids.setArray(1, conn.createArrayOf("bigint", new Object[] {1L, 2L, 3L, 4L, 5L, 6L, 7L, 8L, 9L}));
                StringJoiner seen = new StringJoiner(",");
                try (ResultSet rs = ids.executeQuery()) {
                    while (rs.next()) seen.add(Long.toString(rs.getLong(1)));
                }
                if (!seen.toString().equals(expected)) throw new AssertionError("saw " + seen + ", expected " + expected);
            }
            PreparedStatement holder = conn.prepareStatement("SELECT holder, balance FROM accounts WHERE id = ?");
            ResultSetMetaData meta = holder.getMetaData();
            if (meta.getColumnCount() != 2 || !meta.getColumnName(1).equals("holder")) throw new AssertionError("metadata");
            conn.setAutoCommit(false);
            PreparedStatement touch = conn.prepareStatement("UPDATE accounts SET balance = balance WHERE id = ?");
            for (String id : expected.split(",")) {
                touch.setLong(1, Long.parseLong(id));
                touch.addBatch();
            }
            int[] counts = touch.executeBatch();
            conn.commit();
            if (counts.length != expected.split(",").length) throw new AssertionError("batch");
            System.out.println("ok");
        }
    }
}
