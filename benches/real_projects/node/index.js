const express = require("express");
const _ = require("lodash");

// benches/real_projects.sh rewrites the next line for its "one-line change" rebuilds.
const EDIT = "edit-0";

const app = express();
app.get("/", (req, res) => res.send(_.join(["express", require("express/package.json").version, EDIT], " ")));
console.log("hello from express,", EDIT, _.kebabCase("real project"));
