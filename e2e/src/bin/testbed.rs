//! `testbed containerd`: a private containerd for demos and manual testing, the same one the
//! test suite uses: its own root, state and socket in a temp dir, locally built images
//! (`localhost/busybox:test`, `localhost/pause:test` as the sandbox image) imported.
//!
//! Prints `ready unix:///…/containerd.sock` once it answers, then runs until SIGTERM or
//! SIGINT, and cleans up: containers, containerd, mounts, files.

use smol::stream::StreamExt;

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("containerd") => {}
        _ => {
            eprintln!("usage: testbed containerd\n\nStarts a private containerd with test images; prints its endpoint; stops on SIGTERM.");
            std::process::exit(2);
        }
    }
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .expect("signal handlers");
    let ctrd = e2e::containerd::Containerd::start();
    println!("ready {}", ctrd.endpoint());
    smol::block_on(async {
        signals.next().await;
    });
    drop(ctrd);
}
