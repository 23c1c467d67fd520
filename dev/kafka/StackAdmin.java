// The stack's Kafka administration that librdkafka cannot do: SCRAM users and ACLs, through
// the Admin API of kafka-clients (on the classpath). Run as a single-file program:
//   java -cp '.stack/kafka/libs/*' dev/kafka/StackAdmin.java BOOTSTRAP scram USER PASSWORD
//   java -cp ... StackAdmin.java BOOTSTRAP acl add|remove PRINCIPAL TYPE NAME LITERAL|PREFIXED OPERATION
//   java -cp ... StackAdmin.java BOOTSTRAP acl clear PRINCIPAL
//   java -cp ... StackAdmin.java BOOTSTRAP acl set PRINCIPAL TYPE:NAME:PATTERN:OPERATION...
//     (exactly those ACLs for the principal)
//   java -cp ... StackAdmin.java BOOTSTRAP delete-topics REGEX
//     (every topic whose whole name matches; prints how many)
// TYPE is topic, group, transactional_id or cluster; OPERATION a Kafka AclOperation
// (write, describe, read, create, idempotent_write, ...).

import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;

public class StackAdmin {
    public static void main(String[] a) throws Exception {
        if (a.length < 2) {
            System.err.println("usage: StackAdmin BOOTSTRAP scram|acl|delete-topics ...");
            System.exit(2);
        }
        try (org.apache.kafka.clients.admin.Admin admin =
                org.apache.kafka.clients.admin.Admin.create(Map.of("bootstrap.servers", a[0]))) {
            switch (a[1]) {
                case "scram" -> admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(
                        a[2], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), a[3])))
                        .all().get();
                case "acl" -> acl(admin, a);
                case "delete-topics" -> {
                    java.util.regex.Pattern re = java.util.regex.Pattern.compile(a[2]);
                    List<String> doomed = admin.listTopics().names().get().stream()
                            .filter(t -> re.matcher(t).matches()).toList();
                    if (!doomed.isEmpty()) admin.deleteTopics(doomed).all().get();
                    System.out.println(doomed.size());
                }
                default -> {
                    System.err.println("unknown command " + a[1]);
                    System.exit(2);
                }
            }
        }
    }

    static AclBinding binding(String principal, String typeName, String name, String patternName, String opName) {
        ResourceType type = ResourceType.fromString(typeName.toUpperCase());
        PatternType pattern = PatternType.fromString(patternName.toUpperCase());
        AclOperation op = AclOperation.fromString(opName.toUpperCase());
        if (type == ResourceType.UNKNOWN || pattern == PatternType.UNKNOWN || op == AclOperation.UNKNOWN) {
            System.err.println("unknown resource type, pattern or operation: " + typeName + " " + patternName + " " + opName);
            System.exit(2);
        }
        return new AclBinding(new ResourcePattern(type, name, pattern),
                new AccessControlEntry(principal, "*", op, AclPermissionType.ALLOW));
    }

    static void acl(org.apache.kafka.clients.admin.Admin admin, String[] a) throws Exception {
        String principal = a[3];
        if (a[2].equals("set")) {
            // Exactly these ACLs for the principal: TYPE:NAME:PATTERN:OPERATION each.
            admin.deleteAcls(List.of(new AclBindingFilter(ResourcePatternFilter.ANY,
                    new AccessControlEntryFilter(principal, null, AclOperation.ANY, AclPermissionType.ANY))))
                    .all().get();
            java.util.List<AclBinding> bs = new java.util.ArrayList<>();
            for (int i = 4; i < a.length; i++) {
                String[] s = a[i].split(":", 4);
                bs.add(binding(principal, s[0], s[1], s[2], s[3]));
            }
            if (!bs.isEmpty()) {
                admin.createAcls(bs).all().get();
            }
            return;
        }
        if (a[2].equals("clear")) {
            admin.deleteAcls(List.of(new AclBindingFilter(ResourcePatternFilter.ANY,
                    new AccessControlEntryFilter(principal, null, AclOperation.ANY, AclPermissionType.ANY))))
                    .all().get();
            return;
        }
        AclBinding b = binding(principal, a[4], a[5], a[6], a[7]);
        switch (a[2]) {
            case "add" -> admin.createAcls(List.of(b)).all().get();
            case "remove" -> admin.deleteAcls(List.of(b.toFilter())).all().get();
            default -> {
                System.err.println("acl add|remove|clear");
                System.exit(2);
            }
        }
    }
}
