//! `rkubectl get KIND [NAME...] [-o wide|yaml|json|name] [-l SEL]
//! [--field-selector SEL] [-A] [-w]`: tables with kubectl's columns, or
//! the objects themselves in a form `apply -f` takes back unchanged.

use crate::args::{parse_targets, Target};
use crate::cmd::Context;
use crate::error::CtlError;
use crate::printers::{self, OutputFormat, Table, TableOptions};
use crate::server::ApiServer;
use rkube_api::DynObject;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// `KIND [NAME...]`, `KIND1,KIND2`, or `KIND/NAME...`.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Output format: wide, yaml, json or name (default: a table).
    #[arg(short = 'o', long = "output")]
    pub output: Option<OutputFormat>,
    /// Label selector (`app=web,tier!=db,env in (a,b)`).
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Field selector (`status.phase=Running,spec.nodeName=n1`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// List across all namespaces (adds a NAMESPACE column).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After listing, keep printing objects as they change.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Print only changes, not the current objects first.
    #[arg(long)]
    pub watch_only: bool,
    /// With --watch, prefix each row with the change (ADDED, MODIFIED,
    /// DELETED).
    #[arg(long)]
    pub output_watch_events: bool,
    /// Omit the header line of tables.
    #[arg(long)]
    pub no_headers: bool,
    /// Add a LABELS column to tables.
    #[arg(long)]
    pub show_labels: bool,
    /// Keep metadata.managedFields in -o yaml|json output (hidden by
    /// default, as kubectl hides them).
    #[arg(long)]
    pub show_managed_fields: bool,
}

impl GetArgs {
    fn format(&self) -> OutputFormat {
        self.output.clone().unwrap_or(OutputFormat::Table)
    }

    fn table_options(&self, show_kind: bool) -> TableOptions {
        TableOptions {
            wide: self.format() == OutputFormat::Wide,
            show_namespace: self.all_namespaces,
            show_kind,
            now: chrono::Utc::now(),
        }
    }
}

/// The objects found for one kind.
struct Found {
    target: Target,
    objects: Vec<DynObject>,
    /// The revision of the list, for a watch to continue from.
    resource_version: String,
}

pub async fn run(ctx: &Context, args: &GetArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let targets = match parse_targets(&args.targets) {
        Ok(targets) => targets,
        // maybe a kind a CustomResourceDefinition added: the server knows
        Err(e) if !(args.watch || args.watch_only) => {
            if crate::cmd::get_custom::run(ctx, args, out).await? {
                return Ok(());
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let watching = args.watch || args.watch_only;
    if watching && (targets.len() != 1 || targets[0].names.len() > 1) {
        return Err(CtlError::usage(
            "watch is only supported on a single resource type and at most one name",
        ));
    }
    let namespace = if args.all_namespaces {
        String::new()
    } else {
        ctx.namespace.clone()
    };
    let label_selector = args.selector.clone().unwrap_or_default();
    let field_selector = args.field_selector.clone().unwrap_or_default();
    if !label_selector.is_empty() {
        rkube_api::selector::Selector::parse(&label_selector).map_err(CtlError::usage)?;
    }
    let server = ctx.connect().await?;

    let mut found = Vec::new();
    let mut failed = false;
    for target in targets {
        let mut objects = Vec::new();
        let mut resource_version = String::new();
        if target.names.is_empty() {
            let list = server
                .list(target.info, &namespace, &label_selector, &field_selector)
                .await?;
            objects = list.items;
            resource_version = list.resource_version;
        } else {
            for name in &target.names {
                match server.get(target.info, &ctx.namespace, name).await {
                    Ok(obj) => objects.push(obj),
                    Err(e @ CtlError::Connect { .. }) => return Err(e),
                    Err(e) => {
                        // like kubectl: print what exists, report the rest
                        failed = true;
                        eprintln!("{e}");
                    }
                }
            }
        }
        found.push(Found {
            target,
            objects,
            resource_version,
        });
    }

    let single_object = found.len() == 1 && found[0].target.names.len() == 1;
    let table_output = matches!(args.format(), OutputFormat::Table | OutputFormat::Wide);
    // with --output-watch-events the watch prints the first rows itself
    if !(args.watch_only || watching && args.output_watch_events && table_output) {
        print_found(ctx, args, &found, single_object, out)?;
    }
    if failed {
        return Err(CtlError::Reported);
    }
    if watching {
        if let Some(f) = found.into_iter().next() {
            watch(&server, args, &namespace, &f, out).await?;
        }
    }
    Ok(())
}

fn print_found(
    ctx: &Context,
    args: &GetArgs,
    found: &[Found],
    single_object: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let total: usize = found.iter().map(|f| f.objects.len()).sum();
    let asked_by_name = found.iter().any(|f| !f.target.names.is_empty());
    let machine_readable = matches!(
        args.format(),
        OutputFormat::Yaml | OutputFormat::Json | OutputFormat::JsonPath(_)
    );
    if total == 0 {
        if asked_by_name {
            // the errors for the missing names were printed already
            return Ok(());
        }
        // kubectl says so only to people; yaml and json print an empty List
        if !machine_readable {
            let namespaced = found.iter().any(|f| f.target.info.namespaced);
            if namespaced && !args.all_namespaces {
                eprintln!("No resources found in {} namespace.", ctx.namespace);
            } else {
                eprintln!("No resources found");
            }
            return Ok(());
        }
    }
    match args.format() {
        OutputFormat::Table | OutputFormat::Wide => {
            let show_kind = found.len() > 1;
            let opts = args.table_options(show_kind);
            let mut first = true;
            for f in found.iter().filter(|f| !f.objects.is_empty()) {
                if !first {
                    writeln!(out)?;
                }
                first = false;
                let table = build_table(args, f.target.info, &f.objects, &opts)?;
                write!(out, "{}", render(args, &table))?;
            }
        }
        format => {
            let all: Vec<DynObject> = found.iter().flat_map(|f| f.objects.iter().cloned()).collect();
            printers::print_objects(out, &format, &all, !single_object, args.show_managed_fields)?;
        }
    }
    Ok(())
}

fn build_table(
    args: &GetArgs,
    info: &rkube_api::ResourceInfo,
    objects: &[DynObject],
    opts: &TableOptions,
) -> Result<Table, CtlError> {
    let mut table = Table::build(info, objects, opts)?;
    if args.show_labels {
        table.header.push("LABELS".into());
        for (row, obj) in table.rows.iter_mut().zip(objects) {
            row.push(labels_cell(obj));
        }
    }
    Ok(table)
}

fn labels_cell(obj: &DynObject) -> String {
    let labels = crate::objects::metadata(obj).labels;
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    printers::or_none(parts.join(","))
}

fn render(args: &GetArgs, table: &Table) -> String {
    let text = table.render();
    if args.no_headers {
        text.split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default()
    } else {
        text
    }
}

/// Prints changes as they happen until the user stops it. Table rows keep
/// the column widths of what was printed first, as kubectl's do.
async fn watch(
    server: &ApiServer,
    args: &GetArgs,
    namespace: &str,
    found: &Found,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let info = found.target.info;
    let label_selector = args.selector.clone().unwrap_or_default();
    let mut field_selector = args.field_selector.clone().unwrap_or_default();
    if let Some(name) = found.target.names.first() {
        let by_name = format!("metadata.name={name}");
        field_selector = if field_selector.is_empty() {
            by_name
        } else {
            format!("{field_selector},{by_name}")
        };
    }
    // a get by name made no list: start from the objects' own revision
    let mut resource_version = found.resource_version.clone();
    if resource_version.is_empty() {
        let list = server
            .list(info, namespace, &label_selector, &field_selector)
            .await?;
        resource_version = list.resource_version;
    }

    let table_output = matches!(args.format(), OutputFormat::Table | OutputFormat::Wide);
    let opts = args.table_options(false);
    let mut header = printers::header(info, &opts);
    if args.show_labels {
        header.push("LABELS".into());
    }
    if args.output_watch_events {
        header.insert(0, "EVENT".into());
    }
    let initial = build_table(args, info, &found.objects, &opts)?;
    let mut widths = Table {
        header: header.clone(),
        rows: Vec::new(),
    }
    .widths();
    // whether the header is on screen (or not wanted)
    let mut header_printed = args.no_headers;
    if table_output && !args.watch_only {
        let rows: Vec<Vec<String>> = if args.output_watch_events {
            // kubectl shows the objects that already exist as ADDED events
            initial
                .rows
                .iter()
                .map(|r| [vec!["ADDED".to_string()], r.clone()].concat())
                .collect()
        } else {
            initial.rows.clone()
        };
        widths = Table {
            header: header.clone(),
            rows: rows.clone(),
        }
        .widths();
        if args.output_watch_events {
            let table = Table {
                header: header.clone(),
                rows,
            };
            write!(out, "{}", render(args, &table))?;
        }
        // an empty first table printed nothing, not even its header
        header_printed |= !initial.rows.is_empty();
    }
    out.flush()?;

    let mut stream = server
        .watch(
            info,
            namespace,
            &label_selector,
            &field_selector,
            &resource_version,
        )
        .await?;
    loop {
        let event = match stream.next().await {
            Ok(Some(ev)) => ev,
            // the server ended the stream (restart, timeout): resume
            Ok(None) => {
                let rv = stream.resource_version.clone();
                stream = server
                    .watch(info, namespace, &label_selector, &field_selector, &rv)
                    .await?;
                continue;
            }
            Err(e) if e.is_gone() => {
                // too far behind: start again from a fresh list
                let list = server
                    .list(info, namespace, &label_selector, &field_selector)
                    .await?;
                stream = server
                    .watch(
                        info,
                        namespace,
                        &label_selector,
                        &field_selector,
                        &list.resource_version,
                    )
                    .await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if table_output {
            let mut row = printers::row(&event.object, &opts)?;
            if args.show_labels {
                row.push(labels_cell(&event.object));
            }
            if args.output_watch_events {
                row.insert(0, event.kind.to_string());
            }
            if !header_printed {
                widths = Table {
                    header: header.clone(),
                    rows: vec![row.clone()],
                }
                .widths();
                write!(out, "{}", printers::render_line(&header, &widths))?;
                header_printed = true;
            }
            for (w, cell) in widths.iter_mut().zip(&row) {
                *w = (*w).max(cell.chars().count() + printers::PADDING);
            }
            write!(out, "{}", printers::render_line(&row, &widths))?;
        } else if args.output_watch_events {
            let mut object = event.object.to_json().map_err(CtlError::usage)?;
            if !args.show_managed_fields {
                printers::hide_managed_fields(&mut object);
            }
            let doc = serde_json::json!({"type": event.kind, "object": object});
            print_watch_document(out, &args.format(), &doc)?;
        } else if args.format() == OutputFormat::Name {
            writeln!(out, "{}", event.object.display_name())?;
        } else {
            let mut doc = event.object.to_json().map_err(CtlError::usage)?;
            if !args.show_managed_fields {
                printers::hide_managed_fields(&mut doc);
            }
            print_watch_document(out, &args.format(), &doc)?;
        }
        out.flush()?;
    }
}

fn print_watch_document(
    out: &mut dyn Write,
    format: &OutputFormat,
    doc: &serde_json::Value,
) -> Result<(), CtlError> {
    if *format == OutputFormat::Yaml {
        write!(out, "---\n{}", rkube_api::codec::json_to_yaml(doc))?;
    } else if let OutputFormat::JsonPath(t) = format {
        let text = t
            .render(doc)
            .map_err(|e| CtlError::usage(format!("error executing jsonpath: {e}")))?;
        write!(out, "{text}")?;
    } else {
        write!(out, "{}", printers::json_pretty(doc))?;
    }
    Ok(())
}
