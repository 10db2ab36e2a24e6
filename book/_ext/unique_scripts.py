"""Drop repeated inline <script> blocks from each page.

Sphinx 7.4 registers an inline script added by an extension once with filename None and again
with filename '' (sphinx-thebe, sphinx-togglebutton), so every page declared `const THEBE_JS_URL`
twice and the browser logged a SyntaxError. Pinned Jupyter Book 1 needs Sphinx < 8."""


def unique(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", unique, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
