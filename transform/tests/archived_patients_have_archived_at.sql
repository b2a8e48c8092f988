-- An archived patient's latest record carries archived_at.
select id, status, archived_at
from {{ ref('patients_current') }}
where status = 'archived' and archived_at is null
