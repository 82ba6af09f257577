//! `nimbus api ...`: HTTP APIs through API Gateway v2's management API.

use anyhow::{anyhow, bail};
use nimbus_client::Client;
use serde_json::{json, Value};

use crate::cli::{ApiCommand, Global, RouteAddArgs, RouteCommand};
use crate::commands::{key_values, print_json, s};
use crate::table;

/// The API an argument names: an id, or else a unique name.
async fn api_id(client: &Client, api: &str) -> anyhow::Result<String> {
    let apis = client.list_apis().await?;
    if apis.iter().any(|a| s(a, "apiId") == api) {
        return Ok(api.to_string());
    }
    let named: Vec<&Value> = apis.iter().filter(|a| s(a, "name") == api).collect();
    match named.as_slice() {
        [one] => Ok(s(one, "apiId")),
        [] => bail!("no API has the id or name {api:?} (`nimbus api ls` lists them)"),
        many => bail!(
            "{} APIs are named {api:?}; give the id instead ({})",
            many.len(),
            many.iter()
                .map(|a| s(a, "apiId"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub async fn run(client: &Client, global: &Global, cmd: ApiCommand) -> anyhow::Result<()> {
    match cmd {
        ApiCommand::Create {
            name,
            description,
            cors_origins,
            cors_methods,
            cors_headers,
        } => {
            let mut body = json!({ "name": name, "protocolType": "HTTP" });
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if !cors_origins.is_empty() {
                body["corsConfiguration"] = json!({
                    "allowOrigins": cors_origins,
                    "allowMethods": if cors_methods.is_empty() { vec!["*".to_string()] } else { cors_methods },
                    "allowHeaders": cors_headers,
                });
            }
            let api = client.create_api(&body).await?;
            let id = s(&api, "apiId");
            let stage = client
                .create_stage(&id, &json!({ "stageName": "$default", "autoDeploy": true }))
                .await?;
            if global.json {
                print_json(&json!({ "api": api, "stage": stage }));
            } else {
                outln!("created API {name} ({id})");
                outln!(
                    "$default stage (deploys every change): {}",
                    s(&stage, "invokeUrl")
                );
            }
            Ok(())
        }
        ApiCommand::Ls => {
            let apis = client.list_apis().await?;
            let shown: Vec<Value> = apis
                .iter()
                .map(|a| {
                    json!({
                        "id": s(a, "apiId"),
                        "name": s(a, "name"),
                        "stages": a.get("stages").cloned().unwrap_or_else(|| json!([])),
                    })
                })
                .collect();
            if global.json {
                print_json(&Value::Array(shown));
                return Ok(());
            }
            let mut rows = Vec::new();
            for a in &shown {
                let stages = a["stages"].as_array().cloned().unwrap_or_default();
                if stages.is_empty() {
                    rows.push(vec![s(a, "id"), s(a, "name"), "-".into(), "-".into()]);
                }
                for st in stages {
                    rows.push(vec![
                        s(a, "id"),
                        s(a, "name"),
                        s(&st, "name"),
                        s(&st, "invokeUrl"),
                    ]);
                }
            }
            table::print(&["ID", "NAME", "STAGE", "INVOKE URL"], &rows);
            Ok(())
        }
        ApiCommand::Rm { api } => {
            let id = api_id(client, &api).await?;
            client.delete_api(&id).await?;
            outln!("deleted API {id}");
            Ok(())
        }
        ApiCommand::Route(RouteCommand::Add(a)) => route_add(client, global, a).await,
        ApiCommand::Route(RouteCommand::Rm { api, route }) => {
            let id = api_id(client, &api).await?;
            let routes = client.list_routes(&id).await?;
            let found = routes
                .iter()
                .find(|r| s(r, "routeId") == route || s(r, "routeKey") == route)
                .ok_or_else(|| anyhow!("API {id} has no route {route:?}"))?;
            client.delete_route(&id, &s(found, "routeId")).await?;
            outln!("deleted route {} of API {id}", s(found, "routeKey"));
            Ok(())
        }
        ApiCommand::Routes { api } => {
            let id = api_id(client, &api).await?;
            let routes = client.list_routes(&id).await?;
            let integrations = client.list_integrations(&id).await?;
            if global.json {
                print_json(&json!({ "routes": routes, "integrations": integrations }));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = routes
                .iter()
                .map(|r| {
                    let target = s(r, "target");
                    let integration = integrations
                        .iter()
                        .find(|i| target == format!("integrations/{}", s(i, "integrationId")));
                    let what = match integration {
                        None => "(no integration)".to_string(),
                        Some(i) => match s(i, "integrationType").as_str() {
                            "AWS_PROXY" => format!(
                                "function {} (payload {})",
                                s(i, "integrationUri"),
                                s(i, "payloadFormatVersion")
                            ),
                            "HTTP_PROXY" => {
                                format!("{} {}", s(i, "integrationMethod"), s(i, "integrationUri"))
                            }
                            _ => format!("mock {}", s(i, "mockStatusCode")),
                        },
                    };
                    vec![s(r, "routeId"), s(r, "routeKey"), what]
                })
                .collect();
            table::print(&["ID", "ROUTE", "INTEGRATION"], &rows);
            Ok(())
        }
        ApiCommand::Deploy {
            api,
            stage,
            description,
            vars,
            access_log_format,
        } => {
            let id = api_id(client, &api).await?;
            let mut body = json!({});
            if let Some(d) = &description {
                body["description"] = json!(d);
            }
            let deployment = client.create_deployment(&id, &body).await?;
            let deployment_id = s(&deployment, "deploymentId");
            let mut stage_body = json!({ "deploymentId": deployment_id });
            if !vars.is_empty() {
                stage_body["stageVariables"] = Value::Object(key_values("var", &vars)?);
            }
            if let Some(f) = &access_log_format {
                let format = if f == "default" {
                    nimbus_gateway::accesslog::DEFAULT_FORMAT
                } else {
                    f.as_str()
                };
                stage_body["accessLogSettings"] = json!({ "format": format });
            }
            let exists = client
                .list_stages(&id)
                .await?
                .iter()
                .any(|st| s(st, "stageName") == stage);
            let shown = if exists {
                client.update_stage(&id, &stage, &stage_body).await?
            } else {
                stage_body["stageName"] = json!(stage);
                client.create_stage(&id, &stage_body).await?
            };
            if global.json {
                print_json(&json!({ "deployment": deployment, "stage": shown }));
            } else {
                outln!(
                    "deployed {deployment_id} to stage {stage}: {}",
                    s(&shown, "invokeUrl")
                );
            }
            Ok(())
        }
        ApiCommand::Stages { api } => {
            let id = api_id(client, &api).await?;
            let stages = client.list_stages(&id).await?;
            if global.json {
                print_json(&Value::Array(stages));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = stages
                .iter()
                .map(|st| {
                    vec![
                        s(st, "stageName"),
                        s(st, "deploymentId"),
                        if st["autoDeploy"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        s(st, "invokeUrl"),
                    ]
                })
                .collect();
            table::print(&["STAGE", "DEPLOYMENT", "AUTO-DEPLOY", "INVOKE URL"], &rows);
            Ok(())
        }
        ApiCommand::Deployments { api } => {
            let id = api_id(client, &api).await?;
            let list = client.list_deployments(&id).await?;
            if global.json {
                print_json(&Value::Array(list));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|d| {
                    vec![
                        s(d, "deploymentId"),
                        s(d, "createdDate"),
                        if d["autoDeployed"].as_bool() == Some(true) {
                            "auto"
                        } else {
                            ""
                        }
                        .into(),
                        s(d, "description"),
                    ]
                })
                .collect();
            table::print(&["DEPLOYMENT", "CREATED", "", "DESCRIPTION"], &rows);
            Ok(())
        }
        ApiCommand::Rollback { api, stage, to } => {
            let id = api_id(client, &api).await?;
            let shown = client
                .update_stage(
                    &id,
                    &stage,
                    &json!({ "deploymentId": to, "autoDeploy": false }),
                )
                .await?;
            if global.json {
                print_json(&shown);
            } else {
                outln!("stage {stage} of API {id} serves deployment {to} again");
            }
            Ok(())
        }
    }
}

async fn route_add(client: &Client, global: &Global, a: RouteAddArgs) -> anyhow::Result<()> {
    let id = api_id(client, &a.api).await?;
    let mut integration = if let Some(f) = &a.function {
        json!({
            "integrationType": "AWS_PROXY",
            "integrationUri": f,
            "payloadFormatVersion": a.payload_format.as_deref().unwrap_or("2.0"),
        })
    } else if let Some(url) = &a.http_url {
        json!({
            "integrationType": "HTTP_PROXY",
            "integrationUri": url,
            "integrationMethod": "ANY",
            "payloadFormatVersion": "1.0",
        })
    } else if let Some(status) = a.mock_status {
        json!({
            "integrationType": "MOCK",
            "mockStatusCode": status,
            "mockHeaders": { "content-type": a.mock_content_type },
            "mockBody": a.mock_body.clone().unwrap_or_default(),
        })
    } else {
        bail!("give one of --function, --http-url, --mock-status");
    };
    if let Some(t) = a.timeout_ms {
        integration["timeoutInMillis"] = json!(t);
    }
    let created = client.create_integration(&id, &integration).await?;
    let integration_id = s(&created, "integrationId");
    let route = match client
        .create_route(
            &id,
            &json!({
                "routeKey": a.route_key,
                "target": format!("integrations/{integration_id}"),
            }),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            // The route was refused: the integration made for it goes too.
            let _ = client.delete_integration(&id, &integration_id).await;
            return Err(e.into());
        }
    };
    if global.json {
        print_json(&json!({ "route": route, "integration": created }));
    } else {
        outln!(
            "added route {} ({}) to API {id}",
            s(&route, "routeKey"),
            s(&route, "routeId")
        );
    }
    Ok(())
}
