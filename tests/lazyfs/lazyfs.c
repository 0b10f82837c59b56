/*
 * lazyfs.so: an LD_PRELOAD shim that records what a power cut would leave of a directory tree.
 *
 * A real file system may lose anything written since the last fsync when the power goes. This
 * shim keeps, beside the real files, the *durable image*: each time the process fsyncs (or
 * fdatasyncs) a regular file under LAZYFS_ROOT, the file's whole content is copied to
 * LAZYFS_SHADOW/ino/<inode>; each time it fsyncs a directory under LAZYFS_ROOT, the directory's
 * entries (name -> inode, or name -> "dir") are written to LAZYFS_SHADOW/dirs/<path>. After the
 * process is killed, tests/power_cut.rs rebuilds the tree from the image: only what was fsynced
 * (content) and what a fsynced directory names (entries) survives, plus, at random, a torn
 * prefix of what was appended after a file's last fsync.
 *
 * Build: cc -shared -fPIC -O2 -o lazyfs.so lazyfs.c -ldl -lpthread
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static int under_root(const char *path, const char **rel) {
    const char *root = getenv("LAZYFS_ROOT");
    if (!root || !*root) return 0;
    size_t n = strlen(root);
    if (strncmp(path, root, n) != 0) return 0;
    if (path[n] != '\0' && path[n] != '/') return 0;
    *rel = path[n] == '/' ? path + n + 1 : path + n;
    return 1;
}

/* Copies the content of `fd` (a regular file, perhaps opened write-only) to SHADOW/ino/<ino>,
 * atomically, reading it through a fresh read-only descriptor. */
static void save_file(int wfd, const struct stat *st, const char *shadow) {
    char tmp[PATH_MAX], dst[PATH_MAX], link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", wfd);
    int fd = open(link, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    snprintf(dst, sizeof dst, "%s/ino/%llu", shadow, (unsigned long long)st->st_ino);
    snprintf(tmp, sizeof tmp, "%s/ino/.%llu.tmp", shadow, (unsigned long long)st->st_ino);
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) { close(fd); return; }
    char buf[1 << 16];
    off_t off = 0;
    for (;;) {
        ssize_t r = pread(fd, buf, sizeof buf, off);
        if (r <= 0) break;
        ssize_t w = 0;
        while (w < r) {
            ssize_t k = write(out, buf + w, (size_t)(r - w));
            if (k <= 0) { close(out); close(fd); return; }
            w += k;
        }
        off += r;
    }
    close(fd);
    close(out);
    rename(tmp, dst);
}

/* Writes the entries of directory `path` (relative path `rel`) to SHADOW/dirs/<rel>. */
static void save_dir(const char *path, const char *rel, const char *shadow) {
    char name[PATH_MAX], dst[PATH_MAX], tmp[PATH_MAX];
    snprintf(name, sizeof name, "%s", *rel ? rel : "%root");
    for (char *p = name; *p; p++) if (*p == '/') *p = '%';
    snprintf(dst, sizeof dst, "%s/dirs/%s", shadow, name);
    snprintf(tmp, sizeof tmp, "%s/dirs/.%s.tmp", shadow, name);
    DIR *d = opendir(path);
    if (!d) return;
    FILE *out = fopen(tmp, "w");
    if (!out) { closedir(d); return; }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char full[PATH_MAX];
        struct stat st;
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        if (lstat(full, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) fprintf(out, "d %s\n", e->d_name);
        else if (S_ISREG(st.st_mode)) fprintf(out, "f %llu %s\n", (unsigned long long)st.st_ino, e->d_name);
    }
    closedir(d);
    fclose(out);
    rename(tmp, dst);
}

static void record(int fd) {
    const char *shadow = getenv("LAZYFS_SHADOW");
    if (!shadow || !*shadow) return;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = '\0';
    const char *rel;
    if (!under_root(path, &rel)) return;
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    pthread_mutex_lock(&lock);
    int saved = errno;
    if (S_ISREG(st.st_mode)) save_file(fd, &st, shadow);
    else if (S_ISDIR(st.st_mode)) save_dir(path, rel, shadow);
    errno = saved;
    pthread_mutex_unlock(&lock);
}

int fsync(int fd) {
    if (!real_fsync) real_fsync = dlsym(RTLD_NEXT, "fsync");
    int r = real_fsync(fd);
    if (r == 0) record(fd);
    return r;
}

int fdatasync(int fd) {
    if (!real_fdatasync) real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    int r = real_fdatasync(fd);
    if (r == 0) record(fd);
    return r;
}
