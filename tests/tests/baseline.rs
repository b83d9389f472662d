//! The empty-program baseline loads and runs: benchmarks rely on it as their floor.

use rstwatch_tests::baseline::EmptyXdp;

#[test]
fn the_empty_xdp_program_loads_and_passes_every_frame() {
    let program = EmptyXdp::load().expect("loading a 2-instruction XDP program needs root and BPF");
    let frame = [0u8; 64];
    let ns = program.run(&frame, 1000).expect("BPF_PROG_TEST_RUN");
    assert!(
        ns < 1_000,
        "an empty program should take nanoseconds, took {ns} ns"
    );
}
