//! A second OS process of the same test binary, driven line by line: the parent writes a
//! command per line to its stdin, the child answers with a line starting with `=`. Tests of
//! behaviour across processes (invalidations, tags) run their child side as a test function
//! that only does something when the variable the parent sets is present.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The running child; it is told to quit and waited for on drop.
pub struct ChildProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildProcess {
    /// Runs the test `test` of this binary with `flag=1` and `env`, and waits for its first
    /// answer, `ready`.
    pub fn spawn(test: &str, flag: &str, env: Vec<(&'static str, String)>) -> ChildProcess {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", test, "--nocapture", "--quiet"])
            .env(flag, "1")
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child process");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut p = ChildProcess {
            child,
            stdin,
            stdout,
        };
        assert_eq!(p.answer(), "ready");
        p
    }

    /// The next answer line, without its `=`; other output of the child is skipped.
    pub fn answer(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("child stdout");
            assert!(n > 0, "the child exited");
            if let Some(a) = line.trim_end().strip_prefix('=') {
                return a.to_owned();
            }
        }
    }

    /// Sends one command and returns its answer.
    pub fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("child stdin");
        self.stdin.flush().expect("flush");
        self.answer()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}
