/*
 * alloc-count.so: LD_PRELOAD library that counts heap allocations of a whole process (malloc,
 * calloc, realloc, posix_memalign, aligned_alloc, memalign, valloc), for the zero-allocation check
 * of keel-tgt's I/O path in the guest tests. On SIGUSR2 it writes the count so far to the file
 * named by $ALLOC_COUNT_FILE. The allocations themselves go to glibc's __libc_* functions.
 * Build: gcc -shared -fPIC -O2 -o alloc-count.so alloc-count.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_ulong count;
static char path[512];

void *malloc(size_t n) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); return __libc_realloc(p, n); }
void *memalign(size_t al, size_t n) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); return __libc_memalign(al, n); }
void *aligned_alloc(size_t al, size_t n) { return memalign(al, n); }
void *valloc(size_t n) { return memalign((size_t)sysconf(_SC_PAGESIZE), n); }
int posix_memalign(void **out, size_t al, size_t n) {
  void *p = memalign(al, n);
  if (!p && n) return ENOMEM;
  *out = p;
  return 0;
}

/* Async-signal-safe: formats with no allocation and writes with open/write/close. */
static void dump(int sig) {
  (void)sig;
  char buf[32];
  int i = sizeof buf;
  unsigned long v = atomic_load(&count);
  buf[--i] = '\n';
  do { buf[--i] = (char)('0' + v % 10); v /= 10; } while (v && i > 0);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) { ssize_t w = write(fd, buf + i, sizeof buf - i); (void)w; close(fd); }
}

__attribute__((constructor)) static void init(void) {
  const char *p = getenv("ALLOC_COUNT_FILE");
  if (!p || strlen(p) >= sizeof path) return;
  strcpy(path, p);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = dump;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR2, &sa, NULL);
}
