"""A compiled net drawn as SVG without Graphviz: lrcn-draw's fallback when `dot` is missing.

The layout is layered, as dot's is in spirit: each layer sits one rank after the latest of its
bottoms and each blob one rank after its first producer (an in-place layer's arrow goes back
to the blob it rewrites), ranks run along rankdir, and edges are straight arrows. Simpler than
dot (no crossing reduction), but every layer, blob and connection of review.draw_elements is
there.
"""

from xml.sax.saxutils import escape

from .review import draw_elements, net_title

FONT_SIZE = 10
CHAR_WIDTH = 6.2          # average advance of the sans-serif font at FONT_SIZE, in pixels
LINE_HEIGHT = 13
PADDING = 6
RANK_GAP = 48             # between ranks, along the data flow
NODE_GAP = 16             # between nodes of one rank
MARGIN = 20
TITLE_HEIGHT = 24


def _box_size(label):
    lines = label.split("\n")
    width = max(len(line) for line in lines) * CHAR_WIDTH + 2 * PADDING
    return width, len(lines) * LINE_HEIGHT + 2 * PADDING


def _ranks(nodes, edges):
    """Nodes grouped by rank, in node order within a rank. Edges come in execution order,
    each layer's bottoms before its tops, so one pass places everything."""
    rank = {}
    blobs = {node.id for node in nodes if node.is_blob}
    for source, target in edges:
        if target not in blobs:
            rank[target] = max(rank.get(target, 0), rank.get(source, 0) + 1)
        elif target not in rank:          # an in-place rewrite keeps the blob where it is
            rank[target] = rank.get(source, 0) + 1
    ranks = [[] for _ in range(max(rank.values(), default=0) + 1)]
    for node in nodes:
        ranks[rank.get(node.id, 0)].append(node.id)
    return ranks


def _layout(ranks, sizes, horizontal):
    """{node id: (x, y, width, height)} with ranks along x when `horizontal`."""
    boxes, along = {}, MARGIN
    for rank in ranks:
        depth = max(sizes[n][0 if horizontal else 1] for n in rank)
        across = MARGIN + TITLE_HEIGHT if horizontal else MARGIN
        for node_id in rank:
            width, height = sizes[node_id]
            if horizontal:
                boxes[node_id] = (along + (depth - width) / 2, across, width, height)
                across += height + NODE_GAP
            else:
                boxes[node_id] = (across, along + TITLE_HEIGHT, width, height)
                across += width + NODE_GAP
        along += depth + RANK_GAP
    return boxes


def _anchor(box, outgoing, rankdir):
    """Where an edge leaves (outgoing) or enters a node: the side facing the data flow."""
    x, y, width, height = box
    side = {"LR": (x + width, x), "RL": (x, x + width)}.get(rankdir)
    if side is not None:
        return (side[0] if outgoing else side[1], y + height / 2)
    side = {"TB": (y + height, y), "BT": (y, y + height)}[rankdir]
    return (x + width / 2, side[0] if outgoing else side[1])


def _node_svg(node, box):
    x, y, width, height = box
    corner = height / 2 if node.is_blob else 2    # blobs as pills, layers as boxes
    parts = [f'<g><rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
             f'rx="{min(corner, 12):.1f}" fill="{node.colour}" stroke="#333"/>']
    for index, line in enumerate(node.label.split("\n")):
        baseline = y + PADDING + (index + 1) * LINE_HEIGHT - 3
        parts.append(f'<text x="{x + width / 2:.1f}" y="{baseline:.1f}" '
                     f'text-anchor="middle">{escape(line)}</text>')
    parts.append("</g>")
    return "".join(parts)


def net_to_svg(compiled, rankdir="LR"):
    """The compiled net as a standalone SVG document; rankdir LR, RL, TB or BT."""
    nodes, edges = draw_elements(compiled)
    horizontal = rankdir in ("LR", "RL")
    sizes = {node.id: _box_size(node.label) for node in nodes}
    boxes = _layout(_ranks(nodes, edges), sizes, horizontal)
    width = max((x + w for x, _, w, _ in boxes.values()), default=0) + MARGIN
    height = max((y + h for _, y, _, h in boxes.values()), default=TITLE_HEIGHT) + MARGIN
    width = max(width, len(net_title(compiled)) * CHAR_WIDTH + 2 * MARGIN)
    if rankdir == "RL":
        boxes = {n: (width - x - w, y, w, h) for n, (x, y, w, h) in boxes.items()}
    elif rankdir == "BT":
        boxes = {n: (x, height + TITLE_HEIGHT - y - h, w, h) for n, (x, y, w, h) in boxes.items()}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" '
           f'font-size="{FONT_SIZE}">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#333"/>'
           '</marker></defs>',
           f'<text x="{width / 2:.1f}" y="{MARGIN:.0f}" text-anchor="middle" '
           f'font-size="{FONT_SIZE + 2}">{escape(net_title(compiled))}</text>']
    for source, target in edges:
        (x1, y1), (x2, y2) = (_anchor(boxes[source], True, rankdir),
                              _anchor(boxes[target], False, rankdir))
        out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                   'stroke="#333" marker-end="url(#arrow)"/>')
    out.extend(_node_svg(node, boxes[node.id]) for node in nodes)
    out.append("</svg>")
    return "\n".join(out) + "\n"
