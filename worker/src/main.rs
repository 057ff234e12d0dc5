//! `parley-worker`: runs job handlers against the configured queue.

fn main() {
    eprintln!("parley-worker: no job kinds are registered yet");
}
