//! Reading `-f FILE|DIR|-` into checked objects. Everything is decoded,
//! placed in its namespace, defaulted and validated before the caller
//! sends anything, so a file with one bad object changes nothing and the
//! user sees every problem in one pass.

use crate::error::CtlError;
use crate::objects;
use rkube_api::codec::decode_manifests;
use rkube_api::DynObject;
use std::io::Read;
use std::path::{Path, PathBuf};

/// An object and the file it came from, for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct FileObject {
    pub source: String,
    pub obj: DynObject,
}

/// The namespace objects without one go to, and whether the user named
/// it (`-n`), in which case objects naming another one are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceChoice {
    pub namespace: String,
    pub explicit: bool,
}

/// Which verb reads the files; apply needs names to find objects again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Apply,
    Create,
    Delete,
}

/// Extensions read from a directory, as kubectl does.
const MANIFEST_EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// The texts behind `-f` arguments, each with the name to report it by.
pub fn read_sources(paths: &[String], recursive: bool) -> Result<Vec<(String, String)>, CtlError> {
    let mut out = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CtlError::usage(format!("cannot read standard input: {e}")))?;
            out.push(("STDIN".to_string(), text));
            continue;
        }
        let path = Path::new(p);
        if !path.exists() {
            return Err(CtlError::usage(format!("the path {p:?} does not exist")));
        }
        if path.is_dir() {
            for file in manifest_files(path, recursive)? {
                out.push((file.display().to_string(), read_file(&file)?));
            }
        } else {
            out.push((p.clone(), read_file(path)?));
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<String, CtlError> {
    std::fs::read_to_string(path).map_err(|e| CtlError::usage(format!("cannot read {}: {e}", path.display())))
}

/// Manifest files of a directory in name order (subdirectories too with
/// `-R`), so applying a directory is repeatable.
fn manifest_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, CtlError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CtlError::usage(format!("cannot read directory {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            if recursive {
                out.extend(manifest_files(&p, true)?);
            }
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e))
        {
            out.push(p);
        }
    }
    Ok(out)
}

/// Decodes, namespaces and checks every object of every source. Any
/// problem anywhere fails the whole load, listing every problem.
pub fn load(
    sources: &[(String, String)],
    ns: &NamespaceChoice,
    purpose: Purpose,
) -> Result<Vec<FileObject>, CtlError> {
    let mut objects = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for (source, text) in sources {
        match decode_manifests(text, source) {
            Ok(objs) => {
                for obj in objs {
                    match prepare(source, obj, ns, purpose) {
                        Ok(obj) => objects.push(FileObject {
                            source: source.clone(),
                            obj,
                        }),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(errs) => errors.extend(errs.iter().map(|e| format!("error: {e}"))),
        }
    }
    if !errors.is_empty() {
        return Err(CtlError::Lines(errors));
    }
    if objects.is_empty() {
        let verb = match purpose {
            Purpose::Apply => "apply",
            Purpose::Create => "create",
            Purpose::Delete => "delete",
        };
        return Err(CtlError::usage(format!("no objects passed to {verb}")));
    }
    Ok(objects)
}

/// Puts one object in its namespace and validates it; the error is the
/// full line to print.
fn prepare(
    source: &str,
    obj: DynObject,
    ns: &NamespaceChoice,
    purpose: Purpose,
) -> Result<DynObject, String> {
    let label = if obj.name.is_empty() {
        obj.info.kind.to_string()
    } else {
        format!("{} {:?}", obj.info.kind, obj.name)
    };
    if purpose != Purpose::Create && obj.name.is_empty() {
        let what = if obj.generate_name.is_empty() {
            "a name is required (metadata.name)"
        } else {
            "cannot use generateName; only create can"
        };
        return Err(format!("error: {source}: {label}: {what}"));
    }
    let obj = if obj.info.namespaced {
        if obj.namespace.is_empty() {
            objects::with_namespace(&obj, &ns.namespace)
                .map_err(|e| format!("error: {source}: {label}: {e}"))?
        } else if ns.explicit && obj.namespace != ns.namespace {
            return Err(format!(
                "error: {source}: the namespace from the provided object {:?} does not match the namespace {:?}. You must pass '--namespace={}' to perform this operation.",
                obj.namespace, ns.namespace, obj.namespace
            ));
        } else {
            obj
        }
    } else if !obj.namespace.is_empty() {
        // a namespace on a cluster-scoped object means nothing; drop it
        objects::with_namespace(&obj, "").map_err(|e| format!("error: {source}: {label}: {e}"))?
    } else {
        obj
    };
    if purpose == Purpose::Delete {
        // deleting needs only the identity, not a valid body
        return Ok(obj);
    }
    let errs = objects::validation_errors(&obj).map_err(|e| format!("error: {source}: {label}: {e}"))?;
    if errs.is_empty() {
        Ok(obj)
    } else {
        let name = if obj.name.is_empty() {
            &obj.generate_name
        } else {
            &obj.name
        };
        Err(format!(
            "error: {source}: {}",
            rkube_api::validation::summarize(obj.info.kind, name, &errs)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, explicit: bool) -> NamespaceChoice {
        NamespaceChoice {
            namespace: name.into(),
            explicit,
        }
    }

    const GOOD: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: prod, namespace: x}\n";

    #[test]
    fn objects_land_in_the_default_namespace() {
        let objs = load(
            &[("f.yaml".into(), GOOD.into())],
            &ns("team", false),
            Purpose::Apply,
        )
        .unwrap();
        assert_eq!(objs[0].obj.namespace, "team");
        assert_eq!(
            objs[1].obj.namespace, "",
            "cluster-scoped objects have no namespace"
        );
    }

    #[test]
    fn explicit_namespace_must_match() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: prod}\n";
        let err = load(
            &[("f.yaml".into(), text.into())],
            &ns("dev", true),
            Purpose::Apply,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("does not match the namespace \"dev\""),
            "{err}"
        );
        let ok = load(
            &[("f.yaml".into(), text.into())],
            &ns("dev", false),
            Purpose::Apply,
        )
        .unwrap();
        assert_eq!(ok[0].obj.namespace, "prod");
    }

    #[test]
    fn every_problem_is_reported_and_nothing_loads() {
        let web = format!(
            "{GOOD}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: -1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: nginx}}]}}\n"
        );
        let svc =
            format!("{GOOD}---\napiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {{prots: []}}\n");
        let sources = [("web.yaml".to_string(), web), ("svc.yaml".to_string(), svc)];
        let err = load(&sources, &ns("default", false), Purpose::Apply).unwrap_err();
        let CtlError::Lines(lines) = err else {
            panic!("{err:?}")
        };
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[1].starts_with(
                "error: svc.yaml: document 3 (Service \"s\"): Service.spec.prots: unknown field"
            ),
            "{lines:#?}"
        );
        assert_eq!(
            lines[0],
            "error: web.yaml: Deployment \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
    }

    #[test]
    fn apply_needs_names() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: a-}\n";
        assert!(load(&[("f".into(), text.into())], &ns("d", false), Purpose::Apply).is_err());
        assert!(load(&[("f".into(), text.into())], &ns("d", false), Purpose::Create).is_ok());
    }

    #[test]
    fn missing_paths_and_empty_input_are_errors() {
        let err = read_sources(&["/nonexistent/x.yaml".into()], false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "error: the path \"/nonexistent/x.yaml\" does not exist"
        );
        let err = load(&[("f".into(), "".into())], &ns("d", false), Purpose::Apply).unwrap_err();
        assert_eq!(err.to_string(), "error: no objects passed to apply");
        let err = load(&[("f".into(), "a: [".into())], &ns("d", false), Purpose::Apply).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("error: f: document 1: not valid YAML"),
            "{err}"
        );
    }

    #[test]
    fn directories_read_manifests_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.yml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let sources = read_sources(&[dir.path().display().to_string()], false).unwrap();
        let objs = load(&sources, &ns("d", false), Purpose::Apply).unwrap();
        let names: Vec<&str> = objs.iter().map(|o| o.obj.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
