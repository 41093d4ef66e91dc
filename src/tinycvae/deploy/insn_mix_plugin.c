/* QEMU TCG plugin: how often each guest instruction ran inside one measured window,
 * how often it was followed by an instruction other than the next one in memory (a taken
 * branch, jump, call or return) and how many of its memory accesses hit read-only
 * ranges (what lies in flash on the part). Built and read by tinycvae.deploy.insn_mix.
 *
 *   -plugin insn_mix.so,out=FILE,arm=A,on=B,off=C[,split=D][,ro=LO-HI ...]
 *
 * Counting starts at the first execution of B after A has executed once, stops at the
 * first execution of C after that (C not counted); each execution of D in between
 * starts a new segment (D counted in it). Addresses are hex. At exit FILE gets one line
 * "seg pc size count taken ro_accesses" per instruction and segment that ran, then
 * "end <segments> <total>".
 *
 * QEMU installs no plugin header (Debian's qemu-system-* ship none), so the few
 * declarations of the plugin API used here are written out: API version 1, QEMU 7.2
 * (plugins are loaded only when their version is one QEMU supports).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef uint32_t qemu_plugin_meminfo_t;
typedef struct {
    const char *target_name;
    struct {
        int min, cur;
    } version;
    bool system_emulation;
} qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_mem_rw { QEMU_PLUGIN_MEM_R = 1, QEMU_PLUGIN_MEM_W, QEMU_PLUGIN_MEM_RW };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb)(unsigned int, void *);
typedef void (*mem_cb)(unsigned int, qemu_plugin_meminfo_t, uint64_t, void *);
typedef void (*exit_cb)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *, udata_cb,
                                            enum qemu_plugin_cb_flags, void *);
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *, mem_cb,
                                      enum qemu_plugin_cb_flags, enum qemu_plugin_mem_rw, void *);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, exit_cb, void *);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
void qemu_plugin_outs(const char *);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define MAX_SEG 32
#define MAX_RO 8
#define TABLE 16384 /* distinct instruction addresses (a power of two) */

struct rec {
    uint64_t pc;
    uint32_t size;
    bool used;
    uint64_t count[MAX_SEG], taken[MAX_SEG], ro[MAX_SEG];
};

static struct rec *table;
static uint64_t arm_at, on_at, off_at, split_at;
static bool have_split;
static uint64_t ro_lo[MAX_RO], ro_hi[MAX_RO];
static int n_ro, seg, segs_used;
static enum { IDLE, ARMED, COUNTING, DONE } state;
static struct rec *last;
static int last_seg;
static char out_path[4096];
static bool overflow;

static size_t n_used;

/* The record of ``pc`` (the same for every translation of it), or NULL when the table
 * is full. */
static struct rec *lookup(uint64_t pc)
{
    size_t i = (size_t)(pc >> 1) & (TABLE - 1);
    while (table[i].used && table[i].pc != pc)
        i = (i + 1) & (TABLE - 1);
    if (!table[i].used && n_used + 1 >= TABLE)
        return NULL;
    return &table[i];
}

static void on_exec(unsigned int vcpu, void *udata)
{
    struct rec *r = udata;
    (void)vcpu;
    if (state == IDLE && r->pc == arm_at)
        state = ARMED;
    if (state == ARMED && r->pc == on_at)
        state = COUNTING;
    if (state != COUNTING)
        return;
    if (last && last->pc + last->size != r->pc)
        last->taken[last_seg]++;
    if (r->pc == off_at) {
        state = DONE;
        return;
    }
    if (have_split && r->pc == split_at && seg + 1 < MAX_SEG)
        seg++;
    r->count[seg]++;
    last = r;
    last_seg = seg;
}

static void on_mem(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
    struct rec *r = udata;
    int k;
    (void)vcpu;
    (void)info;
    if (state != COUNTING || r != last)
        return;
    for (k = 0; k < n_ro; k++)
        if (vaddr >= ro_lo[k] && vaddr < ro_hi[k]) {
            r->ro[last_seg]++;
            return;
        }
}

static void on_tb(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t i, n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    for (i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        struct rec *r = lookup(pc);
        if (!r) {
            overflow = true;
            continue;
        }
        if (!r->used) {
            n_used++;
            r->used = true;
            r->pc = pc;
            r->size = (uint32_t)qemu_plugin_insn_size(insn);
        }
        qemu_plugin_register_vcpu_insn_exec_cb(insn, on_exec, QEMU_PLUGIN_CB_NO_REGS, r);
        qemu_plugin_register_vcpu_mem_cb(insn, on_mem, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, r);
    }
}

static void write_out(qemu_plugin_id_t id, void *udata)
{
    FILE *f = fopen(out_path, "w");
    uint64_t total = 0;
    size_t i;
    int s;
    (void)id;
    (void)udata;
    if (!f) {
        qemu_plugin_outs("insn_mix: cannot write the output file\n");
        return;
    }
    segs_used = state == IDLE || state == ARMED ? 0 : seg + 1;
    for (i = 0; i < TABLE; i++)
        for (s = 0; s < segs_used; s++)
            if (table[i].used && table[i].count[s]) {
                fprintf(f, "%d %" PRIx64 " %u %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", s, table[i].pc,
                        table[i].size, table[i].count[s], table[i].taken[s], table[i].ro[s]);
                total += table[i].count[s];
            }
    if (overflow)
        fprintf(f, "overflow: more than %d instruction addresses\n", TABLE);
    fprintf(f, "end %d %" PRIu64 "\n", segs_used, total);
    fclose(f);
}

static bool parse_hex(const char *s, uint64_t *v)
{
    char *end;
    *v = strtoull(s, &end, 16);
    return *s && !*end;
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info, int argc,
                                                               char **argv)
{
    int i, have = 0;
    (void)info;
    for (i = 0; i < argc; i++) {
        const char *a = argv[i], *v = strchr(a, '=');
        char lo[32];
        bool ok = v != NULL;
        if (ok && !strncmp(a, "out=", 4)) {
            snprintf(out_path, sizeof out_path, "%s", v + 1);
            have |= 1;
        } else if (ok && !strncmp(a, "arm=", 4)) {
            ok = parse_hex(v + 1, &arm_at), have |= 2;
        } else if (ok && !strncmp(a, "on=", 3)) {
            ok = parse_hex(v + 1, &on_at), have |= 4;
        } else if (ok && !strncmp(a, "off=", 4)) {
            ok = parse_hex(v + 1, &off_at), have |= 8;
        } else if (ok && !strncmp(a, "split=", 6)) {
            ok = have_split = parse_hex(v + 1, &split_at);
        } else if (ok && !strncmp(a, "ro=", 3) && n_ro < MAX_RO && strchr(v, '-')) {
            size_t n = (size_t)(strchr(v, '-') - (v + 1));
            ok = n < sizeof lo;
            if (ok) {
                memcpy(lo, v + 1, n);
                lo[n] = 0;
                ok = parse_hex(lo, &ro_lo[n_ro]) && parse_hex(strchr(v, '-') + 1, &ro_hi[n_ro]);
                n_ro++;
            }
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "insn_mix: bad argument %s\n", a);
            return -1;
        }
    }
    if (have != 15) {
        fprintf(stderr, "insn_mix: out=, arm=, on= and off= are required\n");
        return -1;
    }
    table = calloc(TABLE, sizeof *table);
    if (!table)
        return -1;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
    qemu_plugin_register_atexit_cb(id, write_out, NULL);
    return 0;
}
