"""The demo's stages, one module per stage, each a plain ``run(ctx: DemoContext) -> dict[str, str]``.

They orchestrate what the commands and library packages do (``fedresponse.demo.STAGES`` lists them in
order); library packages never import them.
"""
