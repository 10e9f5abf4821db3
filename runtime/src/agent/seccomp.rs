//! A seccomp filter on every user process: no device nodes, no signals to PID 1 (the
//! agent). Under runc user code lacks `CAP_MKNOD` and Linux ignores signals to a
//! namespace's init; gVisor 20221219 lets even `user` make character devices, and root
//! code kill PID 1, so the kernel below is not trusted to refuse either. The filter is
//! a static program (installing it allocates nothing: it runs between fork and exec).

use std::io;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SYS_MKNOD: u32 = 133;
const SYS_MKNODAT: u32 = 259;
// Calls whose first argument names a process to signal (or to open for signalling).
const SYS_KILL: u32 = 62;
const SYS_TKILL: u32 = 200;
const SYS_TGKILL: u32 = 234;
const SYS_RT_SIGQUEUEINFO: u32 = 129;
const SYS_RT_TGSIGQUEUEINFO: u32 = 297;
const SYS_PIDFD_OPEN: u32 = 434;
const AGENT_PID: u32 = 1;
const S_IFMT: u32 = 0o170000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;

/// Offsets in `struct seccomp_data`: nr, arch, then args[] (u64, little-endian).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;
const ARG1_LOW: u32 = 16 + 8;
const ARG2_LOW: u32 = 16 + 2 * 8;

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// mknod(path, mode) and mknodat(dirfd, path, mode) of a character or block device, and
/// kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo and pidfd_open of pid 1
/// answer EPERM; everything else is allowed. Jumps count instructions skipped.
static PROGRAM: [libc::sock_filter; 22] = [
    op(LD_W_ABS, 0, 0, ARCH),
    op(JMP_JEQ_K, 0, 18, AUDIT_ARCH_X86_64), // other ABI: allow (20)
    op(LD_W_ABS, 0, 0, NR),
    op(JMP_JEQ_K, 10, 0, SYS_MKNOD),            // 14
    op(JMP_JEQ_K, 11, 0, SYS_MKNODAT),          // 16
    op(JMP_JEQ_K, 6, 0, SYS_KILL),              // 12
    op(JMP_JEQ_K, 5, 0, SYS_TKILL),             // 12
    op(JMP_JEQ_K, 4, 0, SYS_TGKILL),            // 12
    op(JMP_JEQ_K, 3, 0, SYS_RT_SIGQUEUEINFO),   // 12
    op(JMP_JEQ_K, 2, 0, SYS_RT_TGSIGQUEUEINFO), // 12
    op(JMP_JEQ_K, 1, 0, SYS_PIDFD_OPEN),        // 12
    op(RET_K, 0, 0, RET_ALLOW),
    op(LD_W_ABS, 0, 0, ARG0_LOW),   // 12: the target pid
    op(JMP_JEQ_K, 7, 6, AGENT_PID), // refuse (21), else allow (20)
    op(LD_W_ABS, 0, 0, ARG1_LOW),   // 14: mknod's mode
    op(JMP_JA, 0, 0, 1),            // to 17
    op(LD_W_ABS, 0, 0, ARG2_LOW),   // 16: mknodat's mode
    op(ALU_AND_K, 0, 0, S_IFMT),    // 17
    op(JMP_JEQ_K, 2, 0, S_IFCHR),   // refuse (21)
    op(JMP_JEQ_K, 1, 0, S_IFBLK),   // refuse (21)
    op(RET_K, 0, 0, RET_ALLOW),     // 20
    op(RET_K, 0, 0, RET_EPERM),     // 21
];

/// Installs the filter on the calling process (inherited across fork and exec).
/// Async-signal-safe: two prctl calls on static data.
pub fn install() -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: PROGRAM.len() as u16,
        filter: PROGRAM.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl(2) with a valid pointer to a static program the kernel copies.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on one call (a classic-BPF interpreter of the opcodes it uses).
    fn verdict(nr: u32, args: [u32; 3]) -> u32 {
        let word = |off: u32| match off {
            NR => nr,
            ARCH => AUDIT_ARCH_X86_64,
            ARG0_LOW => args[0],
            ARG1_LOW => args[1],
            ARG2_LOW => args[2],
            _ => panic!("load of {off}"),
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = PROGRAM[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => acc = word(i.k),
                ALU_AND_K => acc &= i.k,
                JMP_JA => pc += i.k as usize,
                JMP_JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                RET_K => return i.k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn device_nodes_and_signals_to_the_agent_are_refused_and_nothing_else() {
        assert_eq!(verdict(SYS_MKNOD, [0, S_IFCHR | 0o600, 0]), RET_EPERM);
        assert_eq!(verdict(SYS_MKNODAT, [0, 0, S_IFBLK | 0o600]), RET_EPERM);
        assert_eq!(verdict(SYS_MKNOD, [0, 0o010644, 0]), RET_ALLOW, "a FIFO");
        assert_eq!(verdict(SYS_MKNODAT, [0, 0, 0o100644]), RET_ALLOW, "a file");
        for nr in [
            SYS_KILL,
            SYS_TKILL,
            SYS_TGKILL,
            SYS_RT_SIGQUEUEINFO,
            SYS_RT_TGSIGQUEUEINFO,
            SYS_PIDFD_OPEN,
        ] {
            assert_eq!(verdict(nr, [1, 9, 0]), RET_EPERM, "{nr} on pid 1");
            assert_eq!(verdict(nr, [42, 9, 0]), RET_ALLOW, "{nr} on pid 42");
        }
        assert_eq!(verdict(0, [1, 0, 0]), RET_ALLOW, "read(1, ...)");
    }
}
