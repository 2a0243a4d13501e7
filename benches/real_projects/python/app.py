import flask
import requests
import yaml

app = flask.Flask(__name__)
# benches/real_projects.sh rewrites the next line for its "one-line change" rebuilds.
EDIT = "edit-0"


@app.route("/")
def index():
    return yaml.safe_dump({"requests": requests.__version__, "edit": EDIT}).strip()


if __name__ == "__main__":
    body = app.test_client().get("/").get_data(as_text=True)
    print("hello from flask,", EDIT, body.replace("\n", " "))
