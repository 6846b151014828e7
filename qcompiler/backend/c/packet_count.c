/* packet_count: a QEMU TCG plugin (plugin API v1, QEMU 7.2) that counts executed translation
 * blocks and the instructions (on Hexagon: packets) in each, for a deterministic cost proxy.
 *
 *   qemu-hexagon -cpu v67 -plugin ./libpacket_count.so,out=counts.txt ./program
 *
 * At exit, `out` receives one line per translated block: "vaddr n_insns executions" (hex, dec,
 * dec). Debian ships no qemu-plugin.h, so the few API-v1 declarations used are written here.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                           qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                    void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

typedef struct { uint64_t vaddr, n_insns, count; } Block;
enum { CHUNK = 4096 };
typedef struct Chunk { Block blocks[CHUNK]; size_t used; struct Chunk *next; } Chunk;
static Chunk *head, *tail;  /* chunks never move: QEMU keeps pointers into them */
static char out_path[1024] = "packet_counts.txt";

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  if (!tail || tail->used == CHUNK) {
    Chunk *c = calloc(1, sizeof(Chunk));
    if (!c) abort();
    if (tail) tail->next = c; else head = c;
    tail = c;
  }
  Block *b = &tail->blocks[tail->used++];
  b->vaddr = qemu_plugin_tb_vaddr(tb);
  b->n_insns = qemu_plugin_tb_n_insns(tb);
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
}

static void on_exit_(qemu_plugin_id_t id, void *userdata) {
  (void)id; (void)userdata;
  FILE *f = fopen(out_path, "w");
  if (!f) return;
  for (Chunk *c = head; c; c = c->next)
    for (size_t i = 0; i < c->used; ++i)
      if (c->blocks[i].count)
        fprintf(f, "%llx %llu %llu\n", (unsigned long long)c->blocks[i].vaddr,
                (unsigned long long)c->blocks[i].n_insns,
                (unsigned long long)c->blocks[i].count);
  fclose(f);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; ++i)
    if (!strncmp(argv[i], "out=", 4)) {
      strncpy(out_path, argv[i] + 4, sizeof out_path - 1);
    }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, on_exit_, NULL);
  return 0;
}
