// Minimal relay: the floor of any proxy process. Two threads, blocking
// read/write, no parsing: host stdin -> worker stdin, worker stdout -> stdout.
#include <pthread.h>
#include <unistd.h>
#include <stdlib.h>
#include <sys/wait.h>
static int to_w, from_w;
static void *up(void *a) { char b[65536]; ssize_t n; while ((n = read(0, b, sizeof b)) > 0) { ssize_t o = 0; while (o < n) { ssize_t m = write(to_w, b + o, n - o); if (m <= 0) exit(1); o += m; } } close(to_w); return 0; }
static void *down(void *a) { char b[65536]; ssize_t n; while ((n = read(from_w, b, sizeof b)) > 0) { ssize_t o = 0; while (o < n) { ssize_t m = write(1, b + o, n - o); if (m <= 0) exit(1); o += m; } } return 0; }
int main(int argc, char **argv) {
  int i[2], o[2]; pipe(i); pipe(o);
  pid_t p = fork();
  if (p == 0) { dup2(i[0], 0); dup2(o[1], 1); close(i[1]); close(o[0]); execv(argv[1], argv + 1); _exit(127); }
  close(i[0]); close(o[1]); to_w = i[1]; from_w = o[0];
  pthread_t a, b; pthread_create(&a, 0, up, 0); pthread_create(&b, 0, down, 0);
  pthread_join(b, 0); waitpid(p, 0, 0); return 0;
}
