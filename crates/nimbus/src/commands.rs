//! The client-side commands: each one call or a few to the API, printed as a table or JSON.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use nimbus_client::Client;
use serde_json::{json, Value};

use crate::cli::{
    AliasArgs, AliasCommand, Command, DeployArgs, DoctorArgs, Global, InvokeArgs, LogsArgs,
    MetricsArgs,
};
use crate::{metrics_view, table};

/// A field of an API answer as text (`""` when absent or null).
pub(crate) fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

pub(crate) fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn run(global: Global, cmd: Command) -> anyhow::Result<()> {
    let mut client = Client::new(&global.endpoint);
    if let (Some(ak), Some(sk)) = (&global.client_access_key, &global.client_secret_key) {
        client = client.with_credentials(ak, sk);
    }
    match cmd {
        Command::Deploy(a) => deploy(&client, &global, a).await,
        Command::Invoke(a) => invoke(&client, a).await,
        Command::Ls => ls(&client, &global).await,
        Command::Info { name } => info(&client, &global, &name).await,
        Command::Rm { name } => {
            client.delete_function(&name).await?;
            outln!("deleted {name}");
            Ok(())
        }
        Command::Publish { name, description } => {
            let v = client
                .publish_version(&name, description.as_deref())
                .await?;
            if global.json {
                print_json(&v);
            } else {
                outln!("published {name} version {}", s(&v, "Version"));
            }
            Ok(())
        }
        Command::Alias(a) => alias(&client, &global, a).await,
        Command::Concurrency(a) => concurrency(&client, &global, a).await,
        Command::Logs(a) => logs(&client, a).await,
        Command::Metrics(a) => metrics(&client, &global, a).await,
        Command::Api(a) => crate::api_cmd::run(&client, &global, a).await,
        Command::Queue(a) => crate::queue_cmd::run(&client, &global, a).await,
        Command::Schedule(a) => schedule(&client, &global, a).await,
        Command::Up(_) | Command::Doctor(_) | Command::Bench(_) => unreachable!("handled in main"),
    }
}

/// The values of a repeatable `--FLAG KEY=VALUE` option as a map; a later KEY wins.
pub(crate) fn key_values(
    flag: &str,
    pairs: &[String],
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut map = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("--{flag} {p:?} must look like KEY=VALUE"))?;
        if k.is_empty() {
            bail!("--{flag} {p:?} has no KEY before the '='");
        }
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(map)
}

async fn deploy(client: &Client, global: &Global, a: DeployArgs) -> anyhow::Result<()> {
    let zip = if a.path.is_dir() {
        nimbus_client::archive::zip_dir(&a.path)
            .with_context(|| format!("zipping {}", a.path.display()))?
    } else {
        std::fs::read(&a.path).with_context(|| format!("reading {}", a.path.display()))?
    };
    let handler = match a.handler {
        Some(h) => h,
        None if a.runtime.starts_with("provided") => "bootstrap".to_string(),
        None => bail!(
            "--handler is required for the {} runtime (for example app.handler)",
            a.runtime
        ),
    };
    let mut config = json!({ "Runtime": a.runtime, "Handler": handler });
    if let Some(m) = a.memory {
        config["MemorySize"] = m.into();
    }
    if let Some(t) = a.timeout {
        config["Timeout"] = t.into();
    }
    if !a.env.is_empty() {
        config["Environment"] = json!({ "Variables": key_values("env", &a.env)? });
    }
    if let Some(d) = &a.description {
        config["Description"] = d.clone().into();
    }
    let exists = match client.get_function(&a.name, None).await {
        Ok(_) => true,
        Err(nimbus_client::ClientError::Api { status: 404, .. }) => false,
        Err(e) => return Err(e.into()),
    };
    let mut result = if exists {
        client.update_configuration(&a.name, &config).await?;
        client.update_code(&a.name, &zip).await?
    } else {
        client.create_function(&a.name, &zip, config).await?
    };
    if a.publish {
        result = client.publish_version(&a.name, None).await?;
    }
    if global.json {
        print_json(&result);
    } else {
        outln!(
            "{} {} ({} {}, {} bytes, sha256 {}) version {}",
            if exists { "updated" } else { "created" },
            a.name,
            s(&result, "Runtime"),
            s(&result, "Handler"),
            s(&result, "CodeSize"),
            s(&result, "CodeSha256"),
            s(&result, "Version"),
        );
    }
    Ok(())
}

async fn invoke(client: &Client, a: InvokeArgs) -> anyhow::Result<()> {
    let payload = match &a.payload {
        None => Bytes::new(),
        Some(p) if p.starts_with('@') => Bytes::from(
            std::fs::read(&p[1..]).with_context(|| format!("reading payload file {}", &p[1..]))?,
        ),
        Some(p) => Bytes::from(p.clone()),
    };
    let kind = if a.is_async {
        "Event"
    } else if a.dry_run {
        "DryRun"
    } else {
        "RequestResponse"
    };
    let r = client
        .invoke(&a.name, payload, a.qualifier.as_deref(), kind, a.log)
        .await?;
    match kind {
        "Event" => {
            outln!("accepted (request id {})", r.request_id.unwrap_or_default());
            return Ok(());
        }
        "DryRun" => {
            outln!("dry run ok");
            return Ok(());
        }
        _ => {}
    }
    if let Some(tail) = &r.log_tail {
        eprint!("{tail}");
    }
    let mut out = std::io::stdout();
    out.write_all(&r.payload)?;
    out.write_all(b"\n")?;
    if let Some(kind) = r.function_error {
        bail!("the function failed ({kind})");
    }
    Ok(())
}

async fn ls(client: &Client, global: &Global) -> anyhow::Result<()> {
    let fns = client.list_functions().await?;
    if global.json {
        print_json(&Value::Array(fns));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = fns
        .iter()
        .map(|f| {
            vec![
                s(f, "FunctionName"),
                s(f, "Runtime"),
                s(f, "Handler"),
                format!("{} MB", s(f, "MemorySize")),
                format!("{} s", s(f, "Timeout")),
                s(f, "LastModified"),
            ]
        })
        .collect();
    table::print(
        &[
            "NAME",
            "RUNTIME",
            "HANDLER",
            "MEMORY",
            "TIMEOUT",
            "LAST MODIFIED",
        ],
        &rows,
    );
    Ok(())
}

async fn info(client: &Client, global: &Global, name: &str) -> anyhow::Result<()> {
    let f = client.get_function(name, None).await?;
    let versions = client.list_versions(name).await?;
    let aliases = client.list_aliases(name).await?;
    if global.json {
        print_json(&json!({ "Function": f, "Versions": versions, "Aliases": aliases }));
        return Ok(());
    }
    let c = &f["Configuration"];
    for key in [
        "FunctionName",
        "FunctionArn",
        "Runtime",
        "Handler",
        "MemorySize",
        "Timeout",
        "CodeSize",
        "CodeSha256",
        "LastModified",
        "Description",
    ] {
        outln!("{key:<14}{}", s(c, key));
    }
    if let Some(env) = c["Environment"]["Variables"]
        .as_object()
        .filter(|m| !m.is_empty())
    {
        outln!("Environment");
        for (k, v) in env {
            outln!("  {k}={}", v.as_str().unwrap_or_default());
        }
    }
    outln!();
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                s(v, "Version"),
                s(v, "CodeSha256"),
                s(v, "Description"),
                s(v, "LastModified"),
            ]
        })
        .collect();
    table::print(
        &["VERSION", "CODE SHA256", "DESCRIPTION", "LAST MODIFIED"],
        &rows,
    );
    if !aliases.is_empty() {
        outln!();
        let rows: Vec<Vec<String>> = aliases.iter().map(alias_row).collect();
        table::print(&["ALIAS", "VERSION", "ROUTING", "DESCRIPTION"], &rows);
    }
    Ok(())
}

fn alias_row(a: &Value) -> Vec<String> {
    let routing = a["RoutingConfig"]["AdditionalVersionWeights"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(v, w)| format!("{v}={w}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    vec![
        s(a, "Name"),
        s(a, "FunctionVersion"),
        routing,
        s(a, "Description"),
    ]
}

fn alias_body(a: &AliasArgs, create: bool) -> anyhow::Result<Value> {
    let mut body = json!({});
    if create {
        body["Name"] = a.alias.clone().into();
        let v = a
            .version
            .clone()
            .ok_or_else(|| anyhow!("--version is required to create an alias"))?;
        body["FunctionVersion"] = v.into();
    } else if let Some(v) = &a.version {
        body["FunctionVersion"] = v.clone().into();
    }
    if let Some(d) = &a.description {
        body["Description"] = d.clone().into();
    }
    if let Some(w) = &a.weight {
        let (v, weight) = w
            .split_once('=')
            .ok_or_else(|| anyhow!("--weight {w:?} must look like VERSION=WEIGHT, e.g. 2=0.1"))?;
        let weight: f64 = weight
            .parse()
            .map_err(|_| anyhow!("--weight {w:?}: {weight:?} is not a number"))?;
        body["RoutingConfig"] = json!({ "AdditionalVersionWeights": { v: weight } });
    }
    Ok(body)
}

async fn alias(client: &Client, global: &Global, cmd: AliasCommand) -> anyhow::Result<()> {
    let shown = match cmd {
        AliasCommand::Create(a) => {
            client
                .create_alias(&a.function, &alias_body(&a, true)?)
                .await?
        }
        AliasCommand::Update(a) => {
            client
                .update_alias(&a.function, &a.alias, &alias_body(&a, false)?)
                .await?
        }
        AliasCommand::Rm { function, alias } => {
            client.delete_alias(&function, &alias).await?;
            outln!("deleted alias {alias} of {function}");
            return Ok(());
        }
        AliasCommand::Ls { function } => {
            let list = client.list_aliases(&function).await?;
            if global.json {
                print_json(&Value::Array(list));
            } else {
                let rows: Vec<Vec<String>> = list.iter().map(alias_row).collect();
                table::print(&["ALIAS", "VERSION", "ROUTING", "DESCRIPTION"], &rows);
            }
            return Ok(());
        }
    };
    if global.json {
        print_json(&shown);
    } else {
        let row = alias_row(&shown);
        outln!(
            "alias {} -> version {}{}",
            row[0],
            row[1],
            if row[2].is_empty() {
                String::new()
            } else {
                format!(" (+ {})", row[2])
            }
        );
    }
    Ok(())
}

async fn logs(client: &Client, a: LogsArgs) -> anyhow::Result<()> {
    let since_ms = match &a.since {
        Some(s) => {
            let d = humantime::parse_duration(s)
                .map_err(|_| anyhow!("--since {s:?} is not a duration such as 10m, 2h or 1d"))?;
            Some(nimbus_store::now_ms() - d.as_millis() as i64)
        }
        None => None,
    };
    let mut after: Option<i64> = None;
    loop {
        let page = client
            .logs(&a.name, since_ms, after, a.filter.as_deref())
            .await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        for e in &events {
            let ts = e["timestamp"].as_i64().unwrap_or(0);
            writeln!(
                out,
                "{}  {}",
                nimbus_telemetry::utc_timestamp(ts, "Z"),
                e["message"].as_str().unwrap_or_default()
            )?;
        }
        drop(out);
        if let Some(last) = page["lastId"].as_i64() {
            after = Some(last);
        }
        if events.len() >= 5000 {
            continue;
        }
        if !a.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn metrics(client: &Client, global: &Global, a: MetricsArgs) -> anyhow::Result<()> {
    use nimbus_telemetry::metrics::parse_time;
    let now = nimbus_store::now_ms();
    let until = match &a.until {
        Some(u) => parse_time(u, now).map_err(|e| anyhow!("--until {e}"))?,
        None => now,
    };
    let since = parse_time(&a.since, now).map_err(|e| anyhow!("--since {e}"))?;
    if since >= until {
        bail!(
            "--since ({}) must be before --until ({})",
            nimbus_telemetry::utc_timestamp(since, "Z"),
            nimbus_telemetry::utc_timestamp(until, "Z")
        );
    }
    let v = client
        .metrics(&a.name, since, until, a.version.as_deref())
        .await?;
    if global.json {
        print_json(&v);
        return Ok(());
    }
    let window = format!(
        "{} to {}",
        nimbus_telemetry::utc_timestamp(since, "Z"),
        nimbus_telemetry::utc_timestamp(until, "Z")
    );
    let series = v["series"].as_array().cloned().unwrap_or_default();
    if series.is_empty() {
        let which = a
            .version
            .as_deref()
            .map(|v| format!(" version {v}"))
            .unwrap_or_default();
        outln!("no activity for {}{which} from {window}", a.name);
        return Ok(());
    }
    let cols = metrics_view::Columns::new(since, until);
    let heading = metrics_view::column_heading(&cols);
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        outln!(
            "{} version {}, {window}",
            a.name,
            s["version"].as_str().unwrap_or("?")
        );
        table::print(
            &["METRIC", "TOTAL", &heading],
            &metrics_view::rows(s, &cols),
        );
    }
    Ok(())
}

pub fn doctor(a: DoctorArgs) -> anyhow::Result<()> {
    let isolation = nimbus_sandbox::probe();
    let interpreters =
        nimbus_runtime::discover_interpreters(a.python.as_deref(), a.node.as_deref());
    let features = isolation.features();
    if a.json {
        let f: Vec<Value> = features
            .iter()
            .map(|f| json!({ "name": f.name, "enabled": f.enabled, "detail": f.detail }))
            .collect();
        let rt = |r: &Result<nimbus_runtime::Interpreter, String>| match r {
            Ok(i) => json!({ "available": true, "executable": i.executable, "version": i.version }),
            Err(e) => json!({ "available": false, "reason": e }),
        };
        print_json(
            &json!({ "isolation": f, "python3": rt(&interpreters.python), "nodejs": rt(&interpreters.node) }),
        );
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> = features
        .iter()
        .map(|f| {
            vec![
                f.name.to_string(),
                if f.enabled { "on".into() } else { "off".into() },
                f.detail.clone(),
            ]
        })
        .collect();
    for (name, r) in [
        ("python3 runtime", &interpreters.python),
        ("nodejs runtime", &interpreters.node),
    ] {
        rows.push(match r {
            Ok(i) => vec![
                name.into(),
                "on".into(),
                format!("{} {}", i.executable.display(), i.version),
            ],
            Err(e) => vec![name.into(), "off".into(), e.clone()],
        });
    }
    rows.push(vec![
        "provided runtime".into(),
        "on".into(),
        "runs the code's own bootstrap".into(),
    ]);
    table::print(&["FEATURE", "STATE", "DETAIL"], &rows);
    Ok(())
}

async fn concurrency(
    client: &Client,
    global: &Global,
    a: crate::cli::ConcurrencyArgs,
) -> anyhow::Result<()> {
    if let Some(n) = a.reserved {
        client.set_reserved_concurrency(&a.name, Some(n)).await?;
    } else if a.no_reserved {
        client.set_reserved_concurrency(&a.name, None).await?;
    }
    if let Some(q) = &a.qualifier {
        if let Some(n) = a.provisioned {
            client
                .set_provisioned_concurrency(&a.name, q, Some(n))
                .await?;
        } else if a.no_provisioned {
            client.set_provisioned_concurrency(&a.name, q, None).await?;
        }
    }
    let reserved = client.reserved_concurrency(&a.name).await?;
    let provisioned = client.list_provisioned_concurrency(&a.name).await?;
    if global.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "ReservedConcurrentExecutions": reserved,
                "ProvisionedConcurrencyConfigs": provisioned,
            }))?
        );
        return Ok(());
    }
    match reserved {
        Some(n) => outln!("Reserved concurrency: {n}"),
        None => outln!("Reserved concurrency: none (shares the node's unreserved capacity)"),
    }
    if provisioned.is_empty() {
        outln!("Provisioned concurrency: none");
        return Ok(());
    }
    outln!();
    let rows: Vec<Vec<String>> = provisioned
        .iter()
        .map(|p| {
            let arn = s(p, "FunctionArn");
            let qualifier = arn.rsplit(':').next().unwrap_or_default().to_string();
            vec![
                qualifier,
                p["RequestedProvisionedConcurrentExecutions"].to_string(),
                p["AllocatedProvisionedConcurrentExecutions"].to_string(),
                s(p, "Status"),
                s(p, "StatusReason"),
            ]
        })
        .collect();
    table::print(
        &["QUALIFIER", "REQUESTED", "ALLOCATED", "STATUS", "REASON"],
        &rows,
    );
    Ok(())
}

async fn schedule(
    client: &Client,
    global: &Global,
    cmd: crate::cli::ScheduleCommand,
) -> anyhow::Result<()> {
    use crate::cli::ScheduleCommand as S;
    let shown = match cmd {
        S::Add {
            name,
            expr,
            function,
            input,
            tz,
            disabled,
        } => {
            let mut body = json!({ "name": name, "expression": expr, "function": function, "enabled": !disabled });
            if let Some(i) = input {
                let v: Value = serde_json::from_str(&i)
                    .map_err(|e| anyhow!("--input is not valid JSON: {e}"))?;
                body["input"] = v;
            }
            if let Some(z) = tz {
                body["timezone"] = json!(z);
            }
            client.create_schedule(&body).await?
        }
        S::Ls => {
            let list = client.list_schedules().await?;
            if global.json {
                print_json(&Value::Array(list));
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|v| {
                        vec![
                            s(v, "name"),
                            s(v, "expression"),
                            s(v, "timezone"),
                            s(v, "function"),
                            if v["enabled"].as_bool() == Some(true) {
                                "yes"
                            } else {
                                "no"
                            }
                            .into(),
                            s(v, "nextFire"),
                            s(v, "lastFire"),
                        ]
                    })
                    .collect();
                table::print(
                    &[
                        "NAME",
                        "EXPRESSION",
                        "TZ",
                        "FUNCTION",
                        "ENABLED",
                        "NEXT FIRE",
                        "LAST FIRE",
                    ],
                    &rows,
                );
            }
            return Ok(());
        }
        S::Rm { name } => {
            client.delete_schedule(&name).await?;
            outln!("deleted schedule {name}");
            return Ok(());
        }
        S::Enable { name } => client.set_schedule_enabled(&name, true).await?,
        S::Disable { name } => client.set_schedule_enabled(&name, false).await?,
    };
    if global.json {
        print_json(&shown);
    } else {
        outln!(
            "schedule {} ({}, {}) -> {}; next fire {}",
            s(&shown, "name"),
            s(&shown, "expression"),
            if shown["enabled"].as_bool() == Some(true) {
                "enabled"
            } else {
                "disabled"
            },
            s(&shown, "function"),
            match s(&shown, "nextFire") {
                t if t.is_empty() => "none".to_string(),
                t => t,
            }
        );
    }
    Ok(())
}
