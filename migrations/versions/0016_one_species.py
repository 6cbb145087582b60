"""one taxon, one species: labels of one species-rank taxon merged into the row named by its scientific name

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 17:00:00

Before this revision a label kept its own species row even when another label named the same species: a curator's
"Indian Peafowl" was stored under the model's class `peacock` while the references of the same bird were
`Pavo cristatus`, so one bird counted as two species (no references for one of them, two names on the pages).
The code now keeps every label of a species-rank taxon under the row named by that taxon's scientific name
(identify.taxonomy.species_key). This revision moves what older code stored the same way: every reference,
relabel, sighting, prediction and review that points at another label of such a taxon points at the scientific
name's row (made when missing). The label rows stay, as aliases naming their taxon, and every move is written to
`species_merges` (table, row, column, the label it pointed at), so that the history keeps each label as it was
written and the downgrade puts every row back. `reference_images.label` keeps each reference's label as its
build wrote it (answers show it as the neighbour's `species`), filled here from the row it pointed at. Labels with no taxon linked, or naming a higher taxon or a
subspecies, are left as they are.
"""
from datetime import datetime, timezone
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: Union[str, Sequence[str], None] = "0015"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Every column that names a species.
POINTERS = (("reference_images", "species_id"), ("reference_changes", "from_species_id"),
            ("reference_changes", "to_species_id"), ("sightings", "species_id"), ("predictions", "species_id"),
            ("reviews", "species_id"))
CREATED = ("species", "id")  # a merge row that records a species row this revision made


def upgrade() -> None:
    merges = op.create_table(
        "species_merges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("table_name", sa.String(length=40), nullable=False),
        sa.Column("column_name", sa.String(length=40), nullable=False),
        sa.Column("row_id", sa.Integer(), nullable=False),
        sa.Column("from_species_id", sa.Integer(), nullable=True),
        sa.Column("to_species_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_species_merges")),
    )
    with op.batch_alter_table("reference_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("label", sa.String(length=300), nullable=True))
    bind = op.get_bind()
    bind.execute(sa.text("UPDATE reference_images SET label = "
                         "(SELECT name FROM species WHERE species.id = reference_images.species_id)"))
    species = sa.table("species", sa.column("id", sa.Integer), sa.column("name", sa.String),
                       sa.column("taxon_id", sa.Integer), sa.column("created_at", sa.DateTime(timezone=True)))
    taxa = sa.table("taxa", sa.column("id", sa.Integer), sa.column("scientific_name", sa.String),
                    sa.column("rank", sa.String))
    rows = bind.execute(sa.select(species.c.id, species.c.name, taxa.c.id, taxa.c.scientific_name)
                        .join(taxa, taxa.c.id == species.c.taxon_id).where(taxa.c.rank == "species")
                        .order_by(species.c.id)).all()
    ids = {name: row_id for row_id, name in bind.execute(sa.select(species.c.id, species.c.name))}
    moves: list[dict[str, object]] = []
    for label_id, label, taxon_id, scientific_name in rows:
        if label == scientific_name:
            continue
        key_id = ids.get(scientific_name)
        if key_id is None:
            key_id = bind.execute(sa.insert(species).values(name=scientific_name, taxon_id=taxon_id,
                                                            created_at=datetime.now(timezone.utc))
                                  .returning(species.c.id)).scalar_one()
            ids[scientific_name] = key_id
            moves.append({"table_name": CREATED[0], "column_name": CREATED[1], "row_id": key_id,
                          "from_species_id": None, "to_species_id": key_id})
        for table_name, column_name in POINTERS:
            table = sa.table(table_name, sa.column("id", sa.Integer), sa.column(column_name, sa.Integer))
            column = table.c[column_name]
            moved = [row_id for (row_id,) in bind.execute(sa.select(table.c.id).where(column == label_id))]
            if moved:
                bind.execute(sa.update(table).where(column == label_id).values({column_name: key_id}))
                moves += [{"table_name": table_name, "column_name": column_name, "row_id": row_id,
                           "from_species_id": label_id, "to_species_id": key_id} for row_id in moved]
    if moves:
        op.bulk_insert(merges, moves)


def downgrade() -> None:
    bind = op.get_bind()
    merges = sa.table("species_merges", sa.column("table_name", sa.String), sa.column("column_name", sa.String),
                      sa.column("row_id", sa.Integer), sa.column("from_species_id", sa.Integer),
                      sa.column("to_species_id", sa.Integer))
    made: list[int] = []
    for table_name, column_name, row_id, from_id, _to_id in bind.execute(sa.select(merges)).all():
        if (table_name, column_name) == CREATED:
            made.append(row_id)
            continue
        table = sa.table(table_name, sa.column("id", sa.Integer), sa.column(column_name, sa.Integer))
        bind.execute(sa.update(table).where(table.c.id == row_id).values({column_name: from_id}))
    species = sa.table("species", sa.column("id", sa.Integer))
    for species_id in made:  # only when nothing written since points at it
        used = any(bind.execute(sa.select(sa.table(t, sa.column(c, sa.Integer)).c[c])
                                .where(sa.column(c) == species_id).limit(1)).first()
                   for t, c in POINTERS)
        if not used:
            bind.execute(sa.delete(species).where(species.c.id == species_id))
    op.drop_table("species_merges")
    with op.batch_alter_table("reference_images", schema=None) as batch_op:
        batch_op.drop_column("label")
