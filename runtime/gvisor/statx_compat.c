/* Loaded into every process of a gVisor sandbox through /etc/ld.so.preload.
 *
 * gVisor (runsc 20221219) answers EINVAL to statx(2) with AT_NO_AUTOMOUNT, a flag that
 * Debian bookworm's coreutils pass on every call, so `ls`, `stat`, `cp -a` and `du` fail
 * on every path. The flag only matters for automount points, which a sandbox has none
 * of: this statx clears it and makes the same system call.
 *
 * Built with -nostdlib: it depends on nothing but `syscall`, which the process's own C
 * library (glibc or musl) provides when the object is loaded.
 */
struct statx;
long syscall(long number, ...);

#define SYS_STATX 332 /* x86_64 */
#define AT_NO_AUTOMOUNT 0x800

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf)
{
    return (int)syscall(SYS_STATX, dirfd, path, flags & ~AT_NO_AUTOMOUNT, mask, buf);
}
