use super::*;
use serde_json::json;

fn cfg(timeout_ms: u64) -> FunctionsConfig {
    FunctionsConfig {
        python_timeout_ms: timeout_ms,
        python_workers: 1,
        ..Default::default()
    }
}

fn f(p: &PythonPool, graph: &str, code: &str) -> PyFn {
    p.bind(graph, &crate::funcs::digest(code), &Arc::from(code), &[])
}

/// For pools whose calls are all expected to succeed: no deadline a loaded machine could
/// reach (a worker's start-up is not counted anyway).
const GENEROUS_MS: u64 = 120_000;
/// For pools with a runaway call: long enough that a good call, counted from when it starts
/// running, does not reach it on a loaded machine; short enough to keep the test quick.
const RUNAWAY_MS: u64 = 3_000;
const LOOP: &str = "def run(x):\n    while True: pass\n";

#[tokio::test]
async fn calls_check_and_dependencies() {
    let p = PythonPool::new(&cfg(GENEROUS_MS));
    assert_eq!(
        f(&p, "g", "def run(x): return x ** 2\n")
            .call(vec![json!(3)])
            .await
            .unwrap(),
        json!(9)
    );
    let e = p.check("def run(x) return").await.unwrap_err();
    assert!(e.to_string().contains("SyntaxError"), "{e}");
    let e = p.check("x = 1").await.unwrap_err();
    assert!(e.to_string().contains("no run()"), "{e}");
    let sq: Arc<str> = Arc::from("def run(x): return x * x\n");
    let g = p.bind(
        "g",
        "main",
        &Arc::from("def run(x): return iot.sq(x) + 1\n"),
        &[("sq".into(), "sqd".into(), sq)],
    );
    assert_eq!(g.call(vec![json!(4)]).await.unwrap(), json!(17));
    let e = f(&p, "g", "def run(x): return object()\n")
        .call(vec![json!(1)])
        .await
        .unwrap_err();
    assert!(e.0.contains("wrong return type"), "{e}");
    let e = f(&p, "g", "def run(x): raise ValueError('nope')\n")
        .call(vec![json!(1)])
        .await
        .unwrap_err();
    assert!(e.0.contains("ValueError: nope"), "{e}");
    assert_eq!(p.restarts(), 0, "exceptions do not cost a worker");
}

#[tokio::test]
async fn a_runaway_call_times_out_its_worker_is_replaced_and_its_graph_suspended() {
    let p = PythonPool::new(&cfg(RUNAWAY_MS));
    let runaway = f(&p, "bad", LOOP);
    let e = runaway.call(vec![json!(1)]).await.unwrap_err();
    assert!(e.0.contains("timed out"), "{e}");
    assert_eq!(p.restarts(), 1);
    // The graph's next calls are dropped at once, for the backoff.
    let e = runaway.call(vec![json!(2)]).await.unwrap_err();
    assert!(e.0.contains("suspended"), "{e}");
    let status = p.graph_json("bad").unwrap();
    assert_eq!(status["failures"], 1, "{status}");
    assert_eq!(status["suspended_calls"], 1, "{status}");
    assert_eq!(status["lane"], "probation", "{status}");
    assert_eq!(p.restarts(), 1, "a suspended call costs no worker");
    // Another graph is not affected: its calls are answered.
    let good = f(&p, "good", "def run(x): return x + 1\n");
    assert_eq!(good.call(vec![json!(1)]).await.unwrap(), json!(2));
    // After the backoff, the probe runs on probation again (its code being loaded into the
    // new worker does not count as an answer), fails again, and the backoff doubles.
    tokio::time::sleep(MIN_BACKOFF).await;
    let e = runaway.call(vec![json!(3)]).await.unwrap_err();
    assert!(e.0.contains("timed out"), "{e}");
    let status = p.graph_json("bad").unwrap();
    assert_eq!(status["failures"], 2, "{status}");
    assert_eq!(status["lane"], "probation", "{status}");
    assert!(
        status["suspended_for_s"].as_f64().unwrap() > 1.0,
        "{status}"
    );
}

#[tokio::test]
async fn a_runaway_graph_never_holds_up_the_shared_workers() {
    let p = PythonPool::new(&cfg(RUNAWAY_MS));
    let good = f(&p, "good", "def run(x): return x * 2\n");
    // Answered once: the good graph moves to the shared worker.
    assert_eq!(good.call(vec![json!(1)]).await.unwrap(), json!(2));
    assert_eq!(p.graph_json("good").unwrap()["lane"], "shared");
    let runaway = f(&p, "bad", LOOP);
    let stuck = tokio::spawn(async move { runaway.call(vec![json!(1)]).await });
    // While the runaway call holds the probation worker, the good graph's calls go on.
    tokio::time::timeout(Duration::from_secs(10), async {
        while p.probation_pid() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .ok();
    for i in 0..200 {
        assert_eq!(good.call(vec![json!(i)]).await.unwrap(), json!(i * 2));
    }
    let e = stuck.await.unwrap().unwrap_err();
    assert!(e.0.contains("timed out"), "{e}");
    let status = p.graph_json("good").unwrap();
    assert_eq!(status["failures"], 0, "{status}");
}

#[tokio::test]
async fn calls_waiting_behind_a_failing_call_run_on_the_next_worker() {
    let p = PythonPool::new(&cfg(RUNAWAY_MS));
    // Both graphs are new, so both are on the probation worker: the good call is written
    // right behind the runaway one.
    let runaway = f(&p, "bad", LOOP);
    let good = f(&p, "new", "def run(x): return x - 1\n");
    let (bad, ok) = tokio::join!(runaway.call(vec![json!(1)]), async {
        tokio::task::yield_now().await;
        good.call(vec![json!(10)]).await
    });
    assert!(bad.unwrap_err().0.contains("timed out"));
    assert_eq!(ok.unwrap(), json!(9), "the waiting call is not lost");
    assert_eq!(p.graph_json("new").unwrap()["failures"], 0);
    assert_eq!(p.graph_json("bad").unwrap()["failures"], 1);
}

#[tokio::test]
async fn a_function_over_the_memory_limit_fails_with_a_memory_error() {
    let p = PythonPool::new(&FunctionsConfig {
        python_max_memory_mb: 256,
        ..cfg(GENEROUS_MS)
    });
    let hog = f(
        &p,
        "hog",
        "def run(x):\n    return len(bytearray(10 * 1024 ** 3))\n",
    );
    let e = hog.call(vec![json!(1)]).await.unwrap_err();
    assert!(e.0.contains("MemoryError"), "{e}");
    // The worker that ran it is replaced, and the graph suspended like any other failure.
    let status = p.graph_json("hog").unwrap();
    assert_eq!(status["failures"], 1, "{status}");
    let give_up = Instant::now() + Duration::from_secs(60);
    while p.restarts() < 1 {
        assert!(Instant::now() < give_up, "the worker was not replaced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Allocating within the limit works.
    let fine = f(
        &p,
        "fine",
        "def run(x):\n    return len(bytearray(64 * 1024 ** 2))\n",
    );
    assert_eq!(fine.call(vec![json!(1)]).await.unwrap(), json!(64 << 20));
}

#[tokio::test]
async fn workers_run_in_an_empty_private_directory_with_a_scrubbed_environment_and_limits() {
    let p = PythonPool::new(&cfg(GENEROUS_MS));
    let probe = "import os, resource\n\
        def run(x):\n\
        \x20   lim = lambda r: resource.getrlimit(r)[1]\n\
        \x20   return {'cwd': os.getcwd(), 'files': os.listdir('.'), 'env': sorted(os.environ),\n\
        \x20           'as': lim(resource.RLIMIT_AS), 'nofile': lim(resource.RLIMIT_NOFILE),\n\
        \x20           'fsize': lim(resource.RLIMIT_FSIZE), 'core': lim(resource.RLIMIT_CORE),\n\
        \x20           'cpu': resource.getrlimit(resource.RLIMIT_CPU)[0], 'uid': os.geteuid(),\n\
        \x20           'nice': os.nice(0) - os.getpriority(os.PRIO_PROCESS, os.getppid())}\n";
    let v = f(&p, "g", probe).call(vec![json!(1)]).await.unwrap();
    let d = FunctionsConfig::default();
    assert_eq!(v["files"], json!([]), "{v}");
    let cwd = v["cwd"].as_str().unwrap();
    assert!(cwd.contains("iotctl-python-"), "{v}");
    assert_eq!(v["env"], json!(["HOME", "LANG", "PATH", "TMPDIR"]), "{v}");
    assert_eq!(v["as"], json!(d.python_max_memory_mb << 20), "{v}");
    assert_eq!(v["nofile"], json!(d.python_max_open_files), "{v}");
    assert_eq!(v["fsize"], json!(d.python_max_file_mb << 20), "{v}");
    assert_eq!(v["core"], json!(0), "{v}");
    assert_eq!(v["cpu"], json!(d.python_max_cpu_seconds), "{v}");
    // A new function runs on the probation worker, at a lower CPU priority than the
    // controller's.
    assert_eq!(v["nice"], json!(10), "{v}");
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert_eq!(v["uid"], json!(nobody.uid.as_raw()), "root drops to nobody");
    }
    // The directory goes with the worker.
    drop(p);
    let give_up = Instant::now() + Duration::from_secs(60);
    while std::path::Path::new(cwd).exists() {
        assert!(Instant::now() < give_up, "{cwd} left behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn as_root_a_function_cannot_write_outside_its_directory() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (workers then run as functions.python_user)");
        return;
    }
    let p = PythonPool::new(&cfg(GENEROUS_MS));
    // A directory of root's, like the controller's data directory.
    let root_dir = std::env::temp_dir().join(format!("iot-root-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&root_dir).unwrap();
    let target = root_dir.join("owned");
    let code = format!(
        "import os\n\
         def run(x):\n\
         \x20   open('mine.txt', 'w').write('ok')\n\
         \x20   mine = os.stat('mine.txt').st_uid\n\
         \x20   try:\n\
         \x20       open({target:?}, 'w').write('owned')\n\
         \x20       return [mine, 'written']\n\
         \x20   except PermissionError as e:\n\
         \x20       return [mine, 'refused']\n"
    );
    let v = f(&p, "g", &code).call(vec![json!(1)]).await.unwrap();
    let _ = std::fs::remove_dir_all(&root_dir);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(v, json!([nobody.uid.as_raw(), "refused"]));
    assert!(!target.exists());
}

#[tokio::test]
async fn an_unknown_python_user_is_a_clear_error_as_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let p = PythonPool::new(&FunctionsConfig {
        python_user: "no-such-user-here".into(),
        ..cfg(GENEROUS_MS)
    });
    let e = p.check("def run(x): return x\n").await.unwrap_err();
    assert!(e.to_string().contains("no-such-user-here"), "{e}");
}

#[tokio::test]
async fn results_nested_too_deep_are_refused_like_any_data() {
    let p = PythonPool::new(&cfg(GENEROUS_MS));
    let deep = "def run(n):\n    v = 1\n    for _ in range(n): v = [v]\n    return v\n";
    let g = f(&p, "g", deep);
    assert!(g
        .call(vec![json!(iot_proto::wire::MAX_DEPTH - 1)])
        .await
        .is_ok());
    let e = g.call(vec![json!(200)]).await.unwrap_err();
    assert!(
        e.0.contains(&iot_proto::wire::DepthError.to_string()),
        "{e}"
    );
    assert_eq!(p.restarts(), 0);
}

#[tokio::test]
async fn a_missing_interpreter_is_a_clear_error() {
    let p = PythonPool::new(&FunctionsConfig {
        python: "/nonexistent/python3".into(),
        ..Default::default()
    });
    let e = p.check("def run(x): return x\n").await.unwrap_err();
    assert!(e.to_string().contains("cannot start"), "{e}");
}

#[tokio::test]
async fn open_files_and_file_size_are_limited() {
    let p = PythonPool::new(&FunctionsConfig {
        python_max_open_files: 32,
        python_max_file_mb: 1,
        ..cfg(GENEROUS_MS)
    });
    let files = "def run(n):\n\
        \x20   kept = []\n\
        \x20   try:\n\
        \x20       for i in range(n): kept.append(open('f%d' % i, 'w'))\n\
        \x20       return 'opened'\n\
        \x20   except OSError as e:\n\
        \x20       return e.strerror\n";
    let v = f(&p, "g", files).call(vec![json!(100)]).await.unwrap();
    assert_eq!(v, json!("Too many open files"));
    let big = "def run(mb):\n\
        \x20   try:\n\
        \x20       with open('big', 'wb') as f: f.write(b'x' * (mb << 20))\n\
        \x20       return 'written'\n\
        \x20   except OSError as e:\n\
        \x20       return e.strerror\n";
    let v = f(&p, "g", big).call(vec![json!(2)]).await.unwrap();
    assert_eq!(v, json!("File too large"));
    assert_eq!(p.restarts(), 0, "refused, not killed");
}

#[tokio::test]
async fn a_worker_past_its_cpu_budget_finishes_its_call_and_is_replaced() {
    let p = PythonPool::new(&FunctionsConfig {
        python_max_cpu_seconds: 1,
        ..cfg(GENEROUS_MS)
    });
    let burn = "import os, time\n\
        def run(s):\n\
        \x20   end = time.process_time() + s\n\
        \x20   while time.process_time() < end: pass\n\
        \x20   return os.getpid()\n";
    let g = f(&p, "g", burn);
    let first = g.call(vec![json!(1.5)]).await.unwrap();
    let give_up = Instant::now() + Duration::from_secs(60);
    while p.restarts() < 1 {
        assert!(Instant::now() < give_up, "the worker was not replaced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Bound again, the function is on probation again: the same (replaced) worker.
    let second = f(&p, "g", burn).call(vec![json!(0)]).await.unwrap();
    assert_ne!(first, second, "a new probation worker process");
    let status = p.graph_json("g").unwrap();
    assert_eq!(
        status["failures"], 0,
        "retiring is not the graph's failure: {status}"
    );
}
