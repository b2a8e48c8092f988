-- A patient is deleted in patients_current exactly when its latest record has a deleted_at.
select id, status, deleted_at
from {{ ref('patients_current') }}
where (status = 'deleted') != (deleted_at is not null)
