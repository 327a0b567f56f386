//! The tree ensemble of an ONNX-ML model (`TreeEnsembleClassifier` for a binary classifier,
//! `TreeEnsembleRegressor` for one target), read from the model file itself so that occlusion
//! contributions can be computed by walking the trees: replacing one feature changes a tree's
//! output only where the row's path tests that feature, so each tree is walked again once per
//! feature on its path instead of the whole ensemble being scored once per feature.
//!
//! Only the parts of the ONNX protobuf that describe the ensemble are decoded. A graph with any
//! other operator, or attributes this reader does not know, yields no ensemble; the loader also
//! checks the ensemble against ONNX Runtime on probe rows before using it.

use std::collections::HashMap;

use prost::Message;

/// `onnx.ModelProto`, only its graph.
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

/// `onnx.GraphProto`, only its nodes.
#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
}

/// `onnx.NodeProto`, only its operator and attributes.
#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    domain: String,
}

/// `onnx.AttributeProto`, the scalar and list values.
#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(float, tag = "2")]
    f: f32,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(bytes = "vec", tag = "4")]
    s: Vec<u8>,
    #[prost(float, repeated, tag = "7")]
    floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    strings: Vec<Vec<u8>>,
}

/// How a branch compares the feature with its threshold to take its `true` child.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
    NotEqual,
}

impl Rule {
    fn parse(mode: &[u8]) -> Option<Self> {
        Some(match mode {
            b"BRANCH_LT" => Self::Less,
            b"BRANCH_LEQ" => Self::LessOrEqual,
            b"BRANCH_GT" => Self::Greater,
            b"BRANCH_GTE" => Self::GreaterOrEqual,
            b"BRANCH_EQ" => Self::Equal,
            b"BRANCH_NEQ" => Self::NotEqual,
            _ => return None,
        })
    }

    fn holds(self, value: f32, threshold: f32) -> bool {
        match self {
            Self::Less => value < threshold,
            Self::LessOrEqual => value <= threshold,
            Self::Greater => value > threshold,
            Self::GreaterOrEqual => value >= threshold,
            Self::Equal => value == threshold,
            Self::NotEqual => value != threshold,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Branch { feature: usize, threshold: f32, rule: Rule, yes: usize, no: usize },
    Leaf { weight: f64 },
}

/// One tree, its root first.
#[derive(Clone, Debug, PartialEq)]
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// The weight of the leaf that `value` (a feature's value by index) reaches, pushing each
    /// feature tested on the way onto `path`.
    fn walk(&self, value: impl Fn(usize) -> f32, path: &mut Vec<usize>) -> f64 {
        let mut index = 0;
        loop {
            match self.nodes[index] {
                Node::Leaf { weight } => return weight,
                Node::Branch { feature, threshold, rule, yes, no } => {
                    path.push(feature);
                    index = if rule.holds(value(feature), threshold) { yes } else { no };
                }
            }
        }
    }
}

/// What turns the sum of the leaves into the model's output.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Transform {
    /// A regressor's value.
    Identity,
    /// A binary classifier's probability of its positive class.
    Logistic,
}

impl Transform {
    fn apply(self, margin: f64) -> f64 {
        match self {
            Self::Identity => margin,
            Self::Logistic => 1.0 / (1.0 + (-margin).exp()),
        }
    }
}

/// A tree ensemble with its base value and output transform.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Ensemble {
    trees: Vec<Tree>,
    base: f64,
    transform: Transform,
    features: usize,
}

impl Ensemble {
    /// The ensemble of an ONNX model file with `features` inputs, if the graph is one tree
    /// ensemble node of a kind this reader knows.
    pub(super) fn read(onnx: &[u8], features: usize) -> Result<Self, String> {
        let model = ModelProto::decode(onnx).map_err(|error| format!("not an ONNX model: {error}"))?;
        let nodes = model.graph.map(|graph| graph.node).unwrap_or_default();
        let [node] = nodes.as_slice() else {
            return Err(format!("the graph has {} nodes, not one tree ensemble", nodes.len()));
        };
        if node.domain != "ai.onnx.ml" {
            return Err(format!("operator {} of domain {:?} is not a tree ensemble", node.op_type, node.domain));
        }
        let attributes: HashMap<&str, &AttributeProto> =
            node.attribute.iter().map(|attribute| (attribute.name.as_str(), attribute)).collect();
        let known = |name: &str| {
            matches!(
                name,
                "nodes_treeids"
                    | "nodes_nodeids"
                    | "nodes_featureids"
                    | "nodes_values"
                    | "nodes_modes"
                    | "nodes_truenodeids"
                    | "nodes_falsenodeids"
                    | "nodes_missing_value_tracks_true"
                    | "base_values"
                    | "post_transform"
                    | "classlabels_int64s"
                    | "class_treeids"
                    | "class_nodeids"
                    | "class_ids"
                    | "class_weights"
                    | "n_targets"
                    | "aggregate_function"
                    | "target_treeids"
                    | "target_nodeids"
                    | "target_ids"
                    | "target_weights"
            )
        };
        if let Some(unknown) = attributes.keys().find(|name| !known(name)) {
            return Err(format!("attribute {unknown} is not supported"));
        }
        let ints = |name: &str| attributes.get(name).map_or(&[][..], |attribute| attribute.ints.as_slice());
        let floats = |name: &str| attributes.get(name).map_or(&[][..], |attribute| attribute.floats.as_slice());
        let text = |name: &str| attributes.get(name).map(|attribute| attribute.s.as_slice());
        let (prefix, transform) = match (node.op_type.as_str(), text("post_transform")) {
            ("TreeEnsembleClassifier", Some(b"LOGISTIC")) => {
                if ints("classlabels_int64s").len() != 2 {
                    return Err("only binary classifiers are supported".into());
                }
                ("class", Transform::Logistic)
            }
            ("TreeEnsembleRegressor", None | Some(b"NONE")) => {
                if attributes.get("n_targets").is_some_and(|attribute| attribute.i != 1) {
                    return Err("only one target is supported".into());
                }
                if text("aggregate_function").is_some_and(|function| function != b"SUM") {
                    return Err("only the SUM aggregate is supported".into());
                }
                ("target", Transform::Identity)
            }
            (operator, transform) => {
                let transform = transform.map(String::from_utf8_lossy);
                return Err(format!("{operator} with post_transform {transform:?} is not supported"));
            }
        };
        let base = match floats("base_values") {
            [] => 0.0,
            [base] => f64::from(*base),
            _ => return Err("more than one base value".into()),
        };
        if ints(&format!("{prefix}_ids")).iter().any(|id| *id != 0) {
            return Err("leaves weigh more than one score".into());
        }
        let leaves = Leaves {
            trees: ints(&format!("{prefix}_treeids")),
            nodes: ints(&format!("{prefix}_nodeids")),
            weights: floats(&format!("{prefix}_weights")),
        };
        let branches = Branches {
            trees: ints("nodes_treeids"),
            nodes: ints("nodes_nodeids"),
            features: ints("nodes_featureids"),
            values: floats("nodes_values"),
            modes: attributes.get("nodes_modes").map_or(&[][..], |attribute| attribute.strings.as_slice()),
            yes: ints("nodes_truenodeids"),
            no: ints("nodes_falsenodeids"),
        };
        let trees = build(&branches, &leaves, features)?;
        Ok(Self { trees, base, transform, features })
    }

    /// The model's output for `row`.
    pub(super) fn predict(&self, row: &[f32]) -> f64 {
        let mut path = Vec::new();
        let margin = self.base + self.trees.iter().map(|tree| tree.walk(|index| row[index], &mut path)).sum::<f64>();
        self.transform.apply(margin)
    }

    /// The output for `row` and, for each feature in turn, the outputs with that feature alone at
    /// each of its `alternatives`, flattened in feature order. Only the trees whose path for `row`
    /// tests a feature are walked again for its alternatives.
    pub(super) fn substitutions(&self, row: &[f32], alternatives: &[&[f32]]) -> (f64, Vec<f64>) {
        debug_assert_eq!(row.len(), self.features);
        debug_assert_eq!(alternatives.len(), self.features);
        let mut offsets = Vec::with_capacity(alternatives.len());
        let mut total = 0;
        for values in alternatives {
            offsets.push(total);
            total += values.len();
        }
        let mut margin = self.base;
        let mut shifts = vec![0.0; total];
        let (mut path, mut unused) = (Vec::new(), Vec::new());
        for tree in &self.trees {
            path.clear();
            let weight = tree.walk(|index| row[index], &mut path);
            margin += weight;
            path.sort_unstable();
            path.dedup();
            for &substituted in &path {
                for (slot, &alternative) in alternatives[substituted].iter().enumerate() {
                    unused.clear();
                    let value = |index: usize| if index == substituted { alternative } else { row[index] };
                    shifts[offsets[substituted] + slot] += tree.walk(value, &mut unused) - weight;
                }
            }
        }
        let outputs = shifts.iter().map(|shift| self.transform.apply(margin + shift)).collect();
        (self.transform.apply(margin), outputs)
    }
}

/// The `nodes_*` attributes, one entry per node.
struct Branches<'a> {
    trees: &'a [i64],
    nodes: &'a [i64],
    features: &'a [i64],
    values: &'a [f32],
    modes: &'a [Vec<u8>],
    yes: &'a [i64],
    no: &'a [i64],
}

/// The `class_*` or `target_*` attributes, one entry per leaf weight.
struct Leaves<'a> {
    trees: &'a [i64],
    nodes: &'a [i64],
    weights: &'a [f32],
}

fn build(branches: &Branches<'_>, leaves: &Leaves<'_>, features: usize) -> Result<Vec<Tree>, String> {
    let count = branches.nodes.len();
    let lists = [branches.trees.len(), branches.features.len(), branches.values.len(), branches.modes.len()];
    if count == 0 || lists.iter().chain([&branches.yes.len(), &branches.no.len()]).any(|len| *len != count) {
        return Err("the nodes_* attributes differ in length".into());
    }
    if leaves.trees.len() != leaves.nodes.len() || leaves.trees.len() != leaves.weights.len() {
        return Err("the leaf weight attributes differ in length".into());
    }
    // Node ids are per tree; each tree's nodes are laid out in the order they come.
    let mut slots: HashMap<(i64, i64), (usize, usize)> = HashMap::with_capacity(count);
    let mut trees: Vec<(i64, Vec<Node>)> = Vec::new();
    for position in 0..count {
        let tree = branches.trees[position];
        if trees.last().is_none_or(|(id, _)| *id != tree) {
            trees.push((tree, Vec::new()));
        }
        let index = trees.len() - 1;
        let slot = trees[index].1.len();
        if slots.insert((tree, branches.nodes[position]), (index, slot)).is_some() {
            return Err(format!("node {} of tree {tree} appears twice", branches.nodes[position]));
        }
        trees[index].1.push(Node::Leaf { weight: 0.0 });
    }
    let child = |tree: i64, node: i64, of: usize| match slots.get(&(tree, node)) {
        Some((index, slot)) if *index == of => Ok(*slot),
        _ => Err(format!("tree {tree} has no node {node}")),
    };
    for position in 0..count {
        let (tree, node) = (branches.trees[position], branches.nodes[position]);
        let (index, slot) = slots[&(tree, node)];
        if branches.modes[position] == b"LEAF" {
            continue;
        }
        let rule = Rule::parse(&branches.modes[position]).ok_or_else(|| {
            format!("node mode {} is not supported", String::from_utf8_lossy(&branches.modes[position]))
        })?;
        let feature = usize::try_from(branches.features[position])
            .ok()
            .filter(|feature| *feature < features)
            .ok_or_else(|| format!("node {node} of tree {tree} reads feature {}", branches.features[position]))?;
        let yes = child(tree, branches.yes[position], index)?;
        let no = child(tree, branches.no[position], index)?;
        if yes <= slot || no <= slot {
            return Err(format!("node {node} of tree {tree} points back up its tree"));
        }
        trees[index].1[slot] = Node::Branch { feature, threshold: branches.values[position], rule, yes, no };
    }
    for ((tree, node), weight) in leaves.trees.iter().zip(leaves.nodes).zip(leaves.weights) {
        let (index, slot) = *slots.get(&(*tree, *node)).ok_or_else(|| format!("tree {tree} has no leaf {node}"))?;
        match &mut trees[index].1[slot] {
            Node::Leaf { weight: total } => *total += f64::from(*weight),
            Node::Branch { .. } => return Err(format!("node {node} of tree {tree} is a branch with a weight")),
        }
    }
    Ok(trees.into_iter().map(|(_, nodes)| Tree { nodes }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(name: &str) -> Vec<u8> {
        let path = format!("{}/../models/{name}/1/model.onnx", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    #[test]
    fn the_committed_models_read_as_ensembles() {
        for (name, features, transform) in [
            ("breast-cancer", 30, Transform::Logistic),
            ("diabetes-progression", 10, Transform::Identity),
            ("credit-risk", 12, Transform::Logistic),
        ] {
            let ensemble = Ensemble::read(&committed(name), features).unwrap();
            assert_eq!(ensemble.transform, transform, "{name}");
            assert!(ensemble.trees.len() >= 50, "{name}: {} trees", ensemble.trees.len());
        }
    }

    #[test]
    fn a_model_with_fewer_inputs_than_its_trees_read_is_refused() {
        let error = Ensemble::read(&committed("breast-cancer"), 5).unwrap_err();
        assert!(error.contains("reads feature"), "{error}");
    }

    #[test]
    fn bytes_that_are_not_an_ensemble_are_refused() {
        assert!(Ensemble::read(b"not a model", 3).is_err());
        let empty = ModelProto { graph: Some(GraphProto { node: Vec::new() }) }.encode_to_vec();
        assert_eq!(Ensemble::read(&empty, 3).unwrap_err(), "the graph has 0 nodes, not one tree ensemble");
    }

    /// One stump on feature 0 (`< 0.5`: 1.0, else 3.0) and one on feature 1 (`< 0.0`: -1.0,
    /// else 2.0), summed with a base of 10.
    fn stumps() -> Ensemble {
        let stump = |feature, threshold, yes, no| Tree {
            nodes: vec![
                Node::Branch { feature, threshold, rule: Rule::Less, yes: 1, no: 2 },
                Node::Leaf { weight: yes },
                Node::Leaf { weight: no },
            ],
        };
        Ensemble {
            trees: vec![stump(0, 0.5, 1.0, 3.0), stump(1, 0.0, -1.0, 2.0)],
            base: 10.0,
            transform: Transform::Identity,
            features: 3,
        }
    }

    #[test]
    fn substitutions_move_only_the_trees_that_test_the_feature() {
        let ensemble = stumps();
        let row = [1.0, -1.0, 7.0];
        assert_eq!(ensemble.predict(&row), 10.0 + 3.0 - 1.0);
        let alternatives: [&[f32]; 3] = [&[0.0, 2.0], &[1.0], &[0.0, 1.0, 2.0]];
        let (output, outputs) = ensemble.substitutions(&row, &alternatives);
        assert_eq!(output, 12.0);
        // Feature 0 at 0.0 takes the first stump's other leaf, at 2.0 the same one; feature 1 at
        // 1.0 takes the second's other leaf; feature 2 is read by no tree.
        assert_eq!(outputs, vec![10.0, 12.0, 15.0, 12.0, 12.0, 12.0]);
        let mut expected = Vec::new();
        for (feature, values) in alternatives.iter().enumerate() {
            for value in *values {
                let mut copy = row;
                copy[feature] = *value;
                expected.push(ensemble.predict(&copy));
            }
        }
        assert_eq!(outputs, expected);
        assert_eq!(ensemble.substitutions(&row, &[&[], &[], &[]]), (12.0, Vec::new()));
    }

    #[test]
    fn every_branch_rule_compares_as_its_onnx_mode_says() {
        let cases = [
            (b"BRANCH_LT".as_slice(), [false, false, true]),
            (b"BRANCH_LEQ", [false, true, true]),
            (b"BRANCH_GT", [true, false, false]),
            (b"BRANCH_GTE", [true, true, false]),
            (b"BRANCH_EQ", [false, true, false]),
            (b"BRANCH_NEQ", [true, false, true]),
        ];
        for (mode, expected) in cases {
            let rule = Rule::parse(mode).unwrap();
            assert_eq!([2.0, 1.0, 0.0].map(|value| rule.holds(value, 1.0)), expected, "{mode:?}");
        }
        assert_eq!(Rule::parse(b"LEAF"), None);
    }
}
