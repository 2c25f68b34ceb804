/* A qemu TCG plugin that counts the guest instructions a process executes (qemu-user, plugin API version 1 as in
 * Debian's qemu 7.2). Instruction counts are deterministic where qemu's wall-clock timings are not, so they are
 * the one repeatable aarch64 cost figure we can produce without a board.
 *
 * The plugin API is declared here from its documented C signatures (docs/devel/tcg-plugins.rst of qemu):
 * no qemu header is copied or needed. Only the five calls below are used:
 *   qemu_plugin_install (our entry point), qemu_plugin_register_vcpu_tb_trans_cb, qemu_plugin_tb_n_insns,
 *   qemu_plugin_register_vcpu_tb_exec_inline, qemu_plugin_register_atexit_cb.
 * Each translated block gets an inline "add n_insns to a counter" op, so counting adds no helper call per block.
 * A block that leaves early (a fault) would be over-counted; user-mode inference code does not fault.
 *
 * Arguments: out=PATH appends "pid <pid> insns <count>" to PATH at exit (default: stderr).
 * The counter is one plain 64-bit word shared by every guest thread (inline ops are not atomic): count
 * single-threaded runs only (the callers pass threads=1).
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;  /* opaque */
typedef struct qemu_info_t qemu_info_t;  /* opaque here: we read nothing from it */
enum { INLINE_ADD_U64 = 0 };  /* enum qemu_plugin_op: QEMU_PLUGIN_INLINE_ADD_U64 */

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                                  void (*cb)(qemu_plugin_id_t, struct qemu_plugin_tb *));
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, int op, void *ptr, uint64_t imm);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t, void *), void *udata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t insns;
static char out_path[4096];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  qemu_plugin_register_vcpu_tb_exec_inline(tb, INLINE_ADD_U64, &insns, qemu_plugin_tb_n_insns(tb));
}

static void on_exit(qemu_plugin_id_t id, void *udata) {
  (void)id; (void)udata;
  FILE *f = out_path[0] ? fopen(out_path, "a") : stderr;
  if (!f) f = stderr;
  /* a forked child inherits the counter and reports too: the pid tells the caller which line is whose */
  fprintf(f, "pid %ld insns %" PRIu64 "\n", (long)getpid(), insns);
  if (f != stderr) fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; ++i) {
    if (strncmp(argv[i], "out=", 4) == 0) {
      snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
    } else {
      fprintf(stderr, "insn_count: unknown argument %s (expected out=PATH)\n", argv[i]);
      return -1;
    }
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, on_exit, NULL);
  return 0;
}
