//! The floor every kernel cost is compared with: an XDP program that only returns XDP_PASS,
//! loaded straight through the bpf(2) syscall and run under BPF_PROG_TEST_RUN exactly like
//! the real programs, in the same benchmark run.

use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// `mov r0, XDP_PASS (2)` then `exit`.
const PASS_PROGRAM: [u64; 2] = [
    u64::from_le_bytes([0xb7, 0x00, 0, 0, 2, 0, 0, 0]),
    u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
];

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD, zero-padded to the size the
/// kernel accepts.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    _rest: [u64; 12],
}

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    _rest: [u64; 12],
}

/// The `link_create` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 8],
}

/// An XDP program that does nothing but pass the packet.
pub struct EmptyXdp {
    fd: OwnedFd,
}

impl EmptyXdp {
    pub fn load() -> io::Result<Self> {
        let license = b"GPL\0";
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: PASS_PROGRAM.len() as u32,
            insns: PASS_PROGRAM.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..ProgLoadAttr::default()
        };
        attr.prog_name[..9].copy_from_slice(b"xdp_empty");
        let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
        // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Attaches the program to interface `ifindex` of the calling thread's network namespace
    /// through a BPF link, in the kernel's default mode (native where the driver has it, as
    /// rstwatch does); the program stays attached while the returned link lives.
    pub fn attach(&self, ifindex: u32) -> io::Result<OwnedFd> {
        use std::os::fd::AsRawFd as _;
        let mut attr = LinkCreateAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            ..LinkCreateAttr::default()
        };
        let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
        // SAFETY: BPF_LINK_CREATE returned a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Runs the program `repeat` times over `frame`; returns the kernel's average ns per run.
    pub fn run(&self, frame: &[u8], repeat: u32) -> io::Result<u32> {
        use std::os::fd::AsRawFd as _;
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ..TestRunAttr::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        if attr.retval != 2 {
            return Err(io::Error::other(format!(
                "empty XDP program returned {} instead of XDP_PASS",
                attr.retval
            )));
        }
        Ok(attr.duration)
    }
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<RawFd> {
    // SAFETY: `attr` is a live, writable, zero-padded bpf_attr prefix of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as RawFd)
}
