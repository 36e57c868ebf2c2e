//! Scoring a new file with a model trained on your own CSV data (`cargo xtask predict`): the
//! model comes back from its checkpoint with the vocabularies it was trained with, a file
//! without labels is scored, one with labels is also evaluated, and IDs never seen in
//! training are counted.

use std::path::Path;

use rec_trainer::score::{restore, score_file};
use rec_trainer::{Config, Start, checkpoint};

/// click = 1 exactly when the user's and the item's numbers have the same parity.
fn click(u: usize, i: usize) -> u8 {
    u8::from(u % 2 == i % 2)
}

/// The tags of item `i`: five tags over the training items, a new one beyond them.
fn tags(i: usize) -> String {
    if i < 30 {
        format!("t{}|t{}", i % 5, (i + 1) % 5)
    } else {
        format!("t1|new{i}")
    }
}

/// Rows `user,item,tags,click,stars` for `pairs`, or `user,item,tags` without the labels.
fn rows(pairs: &[(usize, usize)], labelled: bool) -> String {
    let mut text = String::from(if labelled {
        "user,item,tags,click,stars\n"
    } else {
        "user,item,tags\n"
    });
    for &(u, i) in pairs {
        let t = tags(i);
        if labelled {
            let c = click(u, i);
            text.push_str(&format!("u{u},i{i},{t},{c},{}\n", 1 + 4 * c));
        } else {
            text.push_str(&format!("u{u},i{i},{t}\n"));
        }
    }
    text
}

fn trained_run(dir: &Path) -> std::path::PathBuf {
    // Every user meets every third item: the held-out pairs below are new combinations of
    // known users and items.
    let train: Vec<(usize, usize)> = (0..20)
        .flat_map(|u| {
            (0..30)
                .filter(move |i| (u + i) % 3 != 0)
                .map(move |i| (u, i))
        })
        .collect();
    std::fs::write(dir.join("train.csv"), rows(&train, true)).unwrap();
    std::fs::write(
        dir.join("schema.toml"),
        "[[columns]]\nname = \"user\"\nrole = \"user\"\n\
         [[columns]]\nname = \"item\"\nrole = \"item\"\n\
         [[columns]]\nname = \"tags\"\nrole = \"multi_hot\"\n\
         [[columns]]\nname = \"click\"\nrole = \"label\"\n\
         [[columns]]\nname = \"stars\"\nrole = \"rating\"\n",
    )
    .unwrap();
    // The run keeps one of the file's two tasks.
    let text = format!(
        "[data]\ndataset = \"csv\"\ntasks = [\"click\"]\n[data.options]\npath = {:?}\nschema = {:?}\n\
         [model]\nname = \"fm\"\n[model.params]\ndim = 8\n\
         [optimizer]\ndense = {{ kind = \"adam\", lr = 0.01 }}\n\
         sparse = {{ kind = \"adam\", lr = 0.05 }}\n\
         [train]\nepochs = 15\nbatch_size = 64\nprogress = false\n[output]\ndir = {:?}\n",
        dir.join("train.csv").display().to_string(),
        dir.join("schema.toml").display().to_string(),
        dir.join("run").display().to_string(),
    );
    let cfg = Config::from_toml(&text, "score test").unwrap();
    rec_trainer::run(&cfg, Start::Fresh).unwrap();
    checkpoint::resolve_pointer(&dir.join("run/checkpoints"), "latest")
        .unwrap()
        .unwrap()
}

#[test]
fn a_csv_run_scores_new_rows_with_and_without_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = trained_run(tmp.path());
    let mut r = restore(&ck).unwrap();
    assert!(
        r.model.as_any_mut().is_none(),
        "FM does not offer its concrete type"
    );

    // Held-out pairs of known users and items, two rows with a user never seen, and one with
    // an item and a tag never seen.
    let mut pairs: Vec<(usize, usize)> = (0..20)
        .flat_map(|u| {
            (0..30)
                .filter(move |i| (u + i) % 3 == 0)
                .map(move |i| (u, i))
        })
        .collect();
    pairs.extend([(97, 1), (98, 2), (5, 31)]);
    let labelled = tmp.path().join("labelled.csv");
    let bare = tmp.path().join("bare.csv");
    std::fs::write(&labelled, rows(&pairs, true)).unwrap();
    std::fs::write(&bare, rows(&pairs, false)).unwrap();

    let s = score_file(&mut r, &bare, None).unwrap();
    assert_eq!(s.tasks, ["click"]);
    assert_eq!(s.lines.len(), pairs.len());
    assert_eq!(s.lines[0], 2, "line numbers of the input, after its header");
    assert!(s.evaluation.is_none(), "no labels, no metrics");
    assert_eq!(
        s.unknown_ids,
        [
            ("user".to_string(), 2),
            ("item".to_string(), 1),
            ("tags".to_string(), 1)
        ]
    );
    let p = &s.values[0];
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)), "probabilities");
    // The model learned the parity rule for combinations it never saw.
    let hits = pairs
        .iter()
        .zip(p)
        .filter(|((u, i), v)| *u < 20 && *i < 30 && (**v > 0.5) == (click(*u, *i) == 1))
        .count();
    let known = pairs.iter().filter(|(u, i)| *u < 20 && *i < 30).count();
    assert!(hits as f64 > 0.8 * known as f64, "{hits} of {known} right");

    // With its labels the file is also evaluated, and the scores are the same.
    let l = score_file(&mut r, &labelled, None).unwrap();
    assert_eq!(l.values, s.values);
    let auc = l.evaluation.unwrap().get(Some("click"), "auc").unwrap();
    assert!(auc > 0.85, "AUC on the held-out pairs {auc}");

    // The CSV: a header, then the input's line and the probability.
    let csv = s.to_csv();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("line,click"));
    assert_eq!(lines.next(), Some(format!("2,{}", p[0]).as_str()));
    assert_eq!(csv.lines().count(), pairs.len() + 1);
}

#[test]
fn scoring_refuses_another_schema_and_a_file_without_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = trained_run(tmp.path());
    let mut r = restore(&ck).unwrap();
    // A schema with an extra field describes another model's input.
    let other = tmp.path().join("other.toml");
    std::fs::write(
        &other,
        "[[columns]]\nname = \"user\"\nrole = \"user\"\n\
         [[columns]]\nname = \"item\"\nrole = \"item\"\n\
         [[columns]]\nname = \"price\"\nrole = \"dense\"\n",
    )
    .unwrap();
    let file = tmp.path().join("new.csv");
    std::fs::write(&file, "user,item,price\nu1,i1,2.5\n").unwrap();
    let e = format!("{:#}", score_file(&mut r, &file, Some(&other)).unwrap_err());
    assert!(
        e.contains("price (") && e.contains("the model was trained on user (categorical)"),
        "{e}"
    );
    std::fs::write(&file, "user,item,tags\n").unwrap();
    let e = format!("{:#}", score_file(&mut r, &file, None).unwrap_err());
    assert!(e.contains("no data rows"), "{e}");
    // A missing ID column is the reader's error, naming the file.
    std::fs::write(&file, "user,click\nu1,1\n").unwrap();
    let e = format!("{:#}", score_file(&mut r, &file, None).unwrap_err());
    assert!(e.contains("new.csv") && e.contains("item"), "{e}");
}

/// From a trained DUPN run to serving: the run directory resolves to a checkpoint (here one
/// whose pointers were lost), the restored model evaluates as the run did, and it downcasts
/// to `user_dupn::Dupn` for `encode_requests` and `score`.
#[test]
fn a_restored_dupn_run_serves_and_evaluates_as_it_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "[data]\ndataset = \"synthetic\"\nprotocol = \"ecom\"\n\
         [data.options]\npreset = \"tiny\"\nmax_history = 10\n\
         [model]\nname = \"dupn\"\n\
         [model.params]\nitem_dim = 4\nproperty_dim = 4\nprofile_dim = 4\nquery_dim = 4\n\
         context_dim = 4\nhidden = 8\nattention_hidden = 8\nmax_history = 10\n\
         [optimizer]\ndense = {{ kind = \"adagrad\", lr = 0.05 }}\n\
         sparse = {{ kind = \"adagrad\", lr = 0.05 }}\n\
         [train]\nepochs = 1\nmax_steps = 5\nbatch_size = 128\nprogress = false\n\
         [output]\ndir = {:?}\n",
        tmp.path().join("run").display().to_string()
    );
    let cfg = Config::from_toml(&text, "dupn run").unwrap();
    let out = rec_trainer::run(&cfg, Start::Fresh).unwrap();
    // A run killed before its pointers were written still resolves, to its newest checkpoint.
    let root = tmp.path().join("run/checkpoints");
    let saved = checkpoint::resolve_pointer(&root, "latest")
        .unwrap()
        .unwrap();
    for p in ["latest", "best"] {
        let _ = std::fs::remove_file(root.join(p));
    }
    let ck = rec_trainer::score::resolve(&tmp.path().join("run")).unwrap();
    assert_eq!(ck, saved);
    // The directory above the run is not one; the error names the run it holds.
    let e = rec_trainer::score::resolve(tmp.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("neither a checkpoint nor a run directory") && e.contains("holds the runs"),
        "{e}"
    );

    let mut r = restore(&ck).unwrap();
    let bs = r.config.train.eval_batch_size;
    let test = rec_trainer::evaluate(r.model.as_mut(), &r.split.test, bs).unwrap();
    assert_eq!(
        test, out.test,
        "the restored model evaluates as the run reported"
    );

    let requests = r.split.test.range(0, 3);
    let dupn = r
        .model
        .as_any_mut()
        .and_then(|m| m.downcast_mut::<user_dupn::Dupn>())
        .expect("a DUPN run restores a Dupn");
    let users = dupn.encode_requests(&requests).unwrap();
    assert_eq!(users.len(), 3);
    // Candidates: the item fields the head reads, from the first rows of the test part.
    let rows = r.split.test.range(0, 4);
    let fields = ["item_id", "brand", "shop", "category", "tags"];
    let cols = fields
        .iter()
        .filter_map(|f| Some((f.to_string(), rows.column(f)?.clone())))
        .collect();
    let candidates = user_dupn::serving::Candidates::new(cols).unwrap();
    let scores = dupn.score(&users.rows(1, 1).unwrap(), &candidates).unwrap();
    assert_eq!(scores.len(), 4);
    assert!(scores.iter().all(|s| s.is_finite()));
}
